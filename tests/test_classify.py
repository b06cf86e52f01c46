"""The classify app end to end: models, learning, evaluation, export parity, prediction, resume, errors."""

import csv
import json
import os
import signal
import time

import keras
import numpy as np
import pytest
from PIL import Image

from apps.classify import app
from apps.classify.__main__ import main
from apps.classify.models import MODELS, build_model
from conftest import run_python
from core import data, export
from core.errors import UserError, run_cli


@pytest.mark.parametrize("name", ["mlp", "lenet5", "resnet"])
@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
def test_every_model_builds_for_gray_and_colour_inputs(name, shape):
    model = build_model(name, shape, 10)
    assert model.inputs[0].name == "images" and model.output_names == ["probabilities"]
    probabilities = model(np.random.default_rng(0).uniform(0, 255, (2, *shape)).astype("float32")).numpy()
    assert probabilities.shape == (2, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_lenet5_has_the_papers_feature_map_sizes():
    model = build_model("lenet5", (28, 28, 1), 10)
    assert model.get_layer("c1").output.shape[1:] == (28, 28, 6)  # 32x32 padded input, 5x5 valid conv
    assert model.get_layer("c3").output.shape[1:] == (10, 10, 16)
    assert model.get_layer("s4").output.shape[1:] == (5, 5, 16)


def test_registry_lists_models_and_rejects_unknown_names():
    assert {"mlp", "lenet5", "resnet"} <= set(MODELS.names())
    with pytest.raises(UserError, match="unknown model 'vgg99'; choose one of: .*lenet5"):
        MODELS.get("vgg99")


def test_classifier_learns_far_above_chance(trained_run):
    report = app.evaluate(trained_run, limit=1000)
    assert report["accuracy"] > 0.65  # chance is 0.10
    assert report["confusion_matrix"].sum() == 1000
    assert os.path.getsize(os.path.join(trained_run, "confusion_matrix.png")) > 10_000
    assert os.path.exists(os.path.join(trained_run, "learning_curves.png"))
    with open(os.path.join(trained_run, "history.csv")) as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    assert len(losses) == 3 and losses[-1] < losses[0]
    with open(os.path.join(trained_run, "results.json")) as f:  # what `make results` tabulates
        record = json.load(f)
    assert (record["app"], record["model"], record["split"]) == ("classify", "lenet5", "test")
    assert record["metrics"]["accuracy"] == report["accuracy"] and record["baselines"]["chance_accuracy"] == 0.1
    assert record["budget"]["epochs"] == 3 and record["budget"]["training_seconds"] > 0


def test_classification_report_against_hand_counts():
    labels = np.array([0, 0, 1, 1, 2, 2])
    predictions = np.array([0, 1, 1, 1, 0, 2])
    report = app.classification_report(labels, predictions, 3)
    np.testing.assert_array_equal(report["confusion_matrix"], [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    assert report["accuracy"] == pytest.approx(4 / 6)
    np.testing.assert_allclose(report["precision"], [1 / 2, 2 / 3, 1])
    np.testing.assert_allclose(report["recall"], [1 / 2, 1, 1 / 2])


def test_export_writes_serving_layout_and_tflite_agrees(trained_run, tmp_path):
    report = app.export_run(trained_run, export_dir=str(tmp_path))
    version_dir = tmp_path / "classify_lenet5" / "1"  # core.export.export_folder: <app>_<model>
    assert report["saved_model"] == str(version_dir)
    assert (version_dir / "saved_model.pb").exists()
    assert (version_dir / "assets.extra" / "labels.txt").read_text().split("\n")[0] == "T-shirt/top"
    assert set(report["tflite"]) == {"float", "dynamic", "int8"}

    images = np.stack([x for x, _ in data.load_dataset("fashion_mnist", limit=16).test.as_numpy_iterator()])
    keras_out = training_model(trained_run).predict(images, verbose=0)
    served = export.run_saved_model(str(version_dir), {"images": images})
    assert set(served) == {"probabilities"}
    np.testing.assert_allclose(served["probabilities"], keras_out, atol=1e-5)
    for kind, path in report["tflite"].items():
        runner = export.tflite_signature_runner(path)
        assert runner.get_input_details()["images"]["shape"].tolist()[1:] == [28, 28, 1]
        tflite_out = export.run_tflite(path, {"images": images})["probabilities"]
        assert np.abs(tflite_out - keras_out).max() <= export.TOLERANCES[kind]
        assert (tflite_out.argmax(1) == keras_out.argmax(1)).mean() >= (1.0 if kind == "float" else 0.85)
    # A second export is the next version; TF Serving then serves both.
    assert app.export_run(trained_run, export_dir=str(tmp_path))["version"] == 2


def training_model(run_dir):
    return keras.models.load_model(os.path.join(run_dir, "model.keras"))


def test_parity_check_catches_a_model_that_differs(tmp_path):
    model = build_model("mlp", (28, 28, 1), 10)
    sample = {"images": np.random.default_rng(1).uniform(0, 255, (8, 28, 28, 1)).astype("float32")}
    app_dir = str(tmp_path / "m")
    export.export_model(model, app_dir, input_names=["images"], output_names=["probabilities"], sample_inputs=sample)
    # Swap the float file for one converted from a different model: the check must fail.
    other = build_model("mlp", (28, 28, 1), 10)
    export.export_saved_model(other, str(tmp_path / "other"), ["images"], ["probabilities"])
    export.convert_to_tflite(str(tmp_path / "other"), str(tmp_path / "other.tflite"))
    reference = export.run_saved_model(os.path.join(app_dir, "1"), sample)
    assert export.max_abs_difference(reference, export.run_tflite(str(tmp_path / "other.tflite"), sample)) > 1e-3


def test_predict_from_run_and_from_saved_model_agree(trained_run, tmp_path):
    (_, _), (x_test, y_test) = data.load_fashion_mnist_arrays()
    paths = []
    for i in range(3):
        path = tmp_path / f"test{i}.png"
        Image.fromarray(x_test[i, ..., 0]).save(path)
        paths.append(str(path))
    from_run = app.predict(paths, run=trained_run)
    exported = app.export_run(trained_run, export_dir=str(tmp_path / "exports"))
    from_saved_model = app.predict(paths, saved_model=exported["saved_model"])
    for a, b in zip(from_run, from_saved_model):
        assert [name for name, _ in a] == [name for name, _ in b]
        np.testing.assert_allclose([p for _, p in a], [p for _, p in b], atol=1e-5)
    assert from_run[0][0][1] > 0.1 and len(from_run[0]) == 3


def test_bad_inputs_give_one_line_errors(trained_run, tmp_path, capsys):
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(big)
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("hello")
    corrupt_run = tmp_path / "corrupt"
    corrupt_run.mkdir()
    (corrupt_run / "config.json").write_text(open(os.path.join(trained_run, "config.json")).read())
    (corrupt_run / "model.keras").write_bytes(b"PK\x03\x04 truncated")
    bad_config = tmp_path / "config.json"
    bad_config.write_text('{"model": "lenet5", "epochs": 0}')
    cases = [
        (["predict", str(tmp_path / "missing.png"), "--run", trained_run], "image not found"),
        (["predict", str(big), "--run", trained_run], "is 64x64 pixels, the model expects 28x28; pass --resize"),
        (["predict", str(not_an_image), "--run", trained_run], "cannot read image"),
        (["train", "--dataset", "imagenet", "--run", str(tmp_path / "r")], "unknown dataset 'imagenet'"),
        (["evaluate", "--run", str(tmp_path / "nothing")], "no training run in"),
        (["predict", str(big), "--run", str(corrupt_run)], "cannot load"),
        (["train", "--model", "mlp", "--dataset", "digits", "--run", trained_run],
         "holds another run (model='lenet5', dataset='fashion_mnist'); give this run its own folder with --run DIR"),
        (["evaluate", "--model", "mlp", "--run", trained_run], "holds a lenet5 run, not mlp"),
        (["train", "--seed", "-1"], "--seed must be at least 0, got -1"),
        (["train", "--config", str(bad_config)], "--epochs must be at least 1, got 0"),
        (["study", "imbalance", "--seed", "-1"], "--seed must be at least 0, got -1"),
        (["transfer"], "transfer needs --backbone DIR"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            run_cli(main, argv, prog="apps.classify")
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("apps.classify: error:") and message in err, (argv, err)
        assert "\n" not in err and "Traceback" not in err


def test_cli_reports_errors_as_one_line_in_a_real_process():
    result = run_python(["-m", "apps.classify", "train", "--model", "nosuchnet"])
    assert result.returncode == 2  # argparse: the usage, then the error
    assert result.stderr.strip().splitlines()[-1].startswith(
        "python -m apps.classify train: error: argument --model: invalid choice: 'nosuchnet' (choose from ")
    # A value out of range is one line, exit 2, before TensorFlow starts.
    result = run_python(["-m", "apps.classify", "train", "--seed", "-1"])
    assert result.returncode == 2
    assert result.stderr.strip() == "apps.classify: error: the command line: --seed must be at least 0, got -1"


def test_killed_training_resumes_and_ends_at_the_same_epoch_count(tmp_path):
    """SIGKILL during training, rerun the same command: it resumes, it does not restart."""
    out = tmp_path / "run"
    command = [
        "-m",
        "apps.classify",
        "train",
        "--model",
        "lenet5",
        "--dataset",
        "fashion_mnist",
        "--limit",
        "4000",
        "--epochs",
        "4",
        "--batch-size",
        "32",
        "--augment",
        "",  # lenet5's budget flips the images: resuming is the point here, not the augmentation
        "--run",
        str(out),
    ]
    import subprocess
    import sys

    from conftest import ROOT

    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    process = subprocess.Popen(
        [sys.executable, *command], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    history = out / "history.csv"
    deadline = time.time() + 150
    while time.time() < deadline and process.poll() is None:
        if history.exists() and len(history.read_text().strip().splitlines()) >= 2 and (out / "backup").exists():
            break  # header + epoch 0, then (a moment later) epoch 0's backup
        time.sleep(0.2)
    assert process.poll() is None, "training finished before it could be killed; make it longer"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert (out / "backup").exists()  # the resume state survived the kill

    result = run_python(command, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    with open(history) as f:
        epochs = [int(row["epoch"]) for row in csv.DictReader(f)]
    # Each epoch appears once: the killed epoch is redone from the last backup
    # (its row, if written, is trimmed), and the run stops at the same total.
    assert epochs == [0, 1, 2, 3]
    assert not (out / "backup").exists()  # removed once training completed
