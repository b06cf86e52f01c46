"""Detection end to end on small generated scenes: short training beats random boxes and the
untrained model, SavedModel/TFLite parity of the post-NMS signature, predict PNGs."""

import json
import os

import numpy as np
import pytest
from cli_help import verb_help_problems
from PIL import Image

from apps.detect import app
from apps.detect.config import TrainConfig
from apps.detect.data import ground_truths
from apps.detect.metrics import detection_metrics
from apps.detect.models import MODELS
from core import export, scenes, training
from core.errors import run_cli

SPEC = scenes.SceneSpec(size=64, max_objects=3, min_scale=0.8, max_scale=1.4, clutter=3)
NAMES = list(scenes.class_names("fashion_mnist"))


@pytest.fixture(scope="module")
def small_scenes():
    return {"train": scenes.generate(SPEC, "train", count=320, seed=0),
            "validation": scenes.generate(SPEC, "validation", count=48, seed=0),
            "test": scenes.generate(SPEC, "test", count=64, seed=0)}


@pytest.fixture(scope="module")
def ssd_run(small_scenes, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ssd_run"))
    config = TrainConfig(model="ssd", epochs=8, batch_size=16, learning_rate=3e-3, mirror=False)
    app.train(config, run_dir=out, class_names=NAMES, scenes={k: small_scenes[k] for k in ("train", "validation")})
    return out


def test_short_ssd_training_beats_random_boxes_and_the_untrained_model(ssd_run, small_scenes):
    test = small_scenes["test"]
    untrained = MODELS.get("ssd").inference(MODELS.get("ssd").build(64, 10), 64, 10)
    before, _ = app.score(untrained, test, 10)
    report = app.evaluate(ssd_run, scenes=test)
    random_boxes = detection_metrics(app.random_baseline(test, 10), ground_truths(test), 10)
    assert random_boxes["map50"] < 0.05
    assert report["map50"] > max(0.1, 5 * random_boxes["map50"], before["map50"] + 0.05), report
    assert report["map50_95"] > report["random_boxes_map50_95"]
    assert os.path.exists(os.path.join(ssd_run, "test_predictions.png"))
    record = json.load(open(os.path.join(ssd_run, "results.json")))  # what `make results` tabulates
    assert record["metrics"]["map50"] == report["map50"] and record["model"] == "ssd"
    assert record["baselines"]["random_boxes_map50"] == report["random_boxes_map50"]


def test_ssd_export_parity_and_predict_png(ssd_run, small_scenes, tmp_path, capsys):
    sample = small_scenes["test"]["image"][:8]
    report = app.export_run(ssd_run, export_dir=str(tmp_path / "exports"), sample_images=sample)
    assert report["saved_model"].startswith(str(tmp_path / "exports" / "detect_ssd"))
    float_parity = report["parity"]["float"]
    assert float_parity["same_detections"] and float_parity["max_abs_diff"] < app.FLOAT_TOLERANCE
    assert set(report["tflite"]) == {"float", "dynamic"}  # no int8: docs/deployment.md says why
    served = export.run_saved_model(report["saved_model"], {"images": sample.astype(np.float32)})
    assert set(served) == {"boxes", "classes", "scores", "num_detections"}
    assert served["boxes"].shape == (8, 10, 4) and served["num_detections"].min() >= 1  # it finds things
    tflite = export.run_tflite(report["tflite"]["float"], {"images": sample.astype(np.float32)})
    assert np.array_equal(tflite["classes"], served["classes"])

    scene = tmp_path / "scene.png"
    Image.fromarray(small_scenes["test"]["image"][0, ..., 0]).save(scene)
    from apps.detect.__main__ import main

    run_cli(main, ["predict", str(scene), "--run", ssd_run], prog="apps.detect")
    printed = capsys.readouterr().out
    assert "scene.png:" in printed and os.path.exists(os.path.join(ssd_run, "predictions", "scene.png"))
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((96, 96), np.uint8)).save(big)
    with pytest.raises(SystemExit):
        run_cli(main, ["predict", str(big), "--run", ssd_run], prog="apps.detect")
    assert "is 96x96 pixels, the detector expects 64x64; pass --resize" in capsys.readouterr().err


MASK_HEAD = ("mask_reduce", "mask_conv1", "mask_conv2", "mask_logits")


@pytest.fixture(scope="module")
def rcnn_run(small_scenes, tmp_path_factory):
    """40 steps of the two-stage detector (two epochs of the 320 scenes), shared by the learning and
    the export test."""
    out = str(tmp_path_factory.mktemp("rcnn_run"))
    app.train(TrainConfig(model="rcnn", epochs=2, batch_size=16, learning_rate=3e-3, mirror=False), run_dir=out,
              class_names=NAMES, scenes={k: small_scenes[k] for k in ("train", "validation")})
    return out


def test_two_stage_training_learns_boxes_and_masks(rcnn_run, small_scenes):
    """mAP@0.5 well above random boxes and the untrained model, and masks well above those its
    untrained mask head drew for the same detections."""
    test = small_scenes["test"]
    inference, _ = app.inference_model(rcnn_run)
    trained, detections = app.score(inference, test, 10)
    random_boxes = detection_metrics(app.random_baseline(test, 10), ground_truths(test), 10)
    training.set_seed(0)  # as app.train does right before building: the run's initial weights
    initial = MODELS.get("rcnn").build(64, 10)
    # The inference model holds the trained model's parts: the initial weights go into them, same graph.
    for name in MASK_HEAD:
        weights = initial.get_layer("roi_heads").get_layer(name).get_weights()
        inference.get_layer("roi_heads").get_layer(name).set_weights(weights)
    _, with_untrained_masks = app.score(inference, test, 10)
    for part in ("backbone", "rpn_head", "roi_heads"):
        inference.get_layer(part).set_weights(initial.get_layer(part).get_weights())
    untrained, _ = app.score(inference, test, 10)
    assert random_boxes["map50"] < 0.02
    assert trained["map50"] > max(0.05, 3 * random_boxes["map50"], untrained["map50"] + 0.05), (trained, untrained)
    masks, untrained_masks = app.mask_iou(detections, test), app.mask_iou(with_untrained_masks, test)
    assert masks > untrained_masks + 0.1, (masks, untrained_masks)


@pytest.mark.slow  # ~2 CPU-minutes (over the fast suite's budget); 120 steps: a higher bar than the fast test above
def test_two_stage_training_learns_and_exports_masks_with_parity(small_scenes, tmp_path):
    test = small_scenes["test"]
    out = str(tmp_path / "rcnn")
    app.train(TrainConfig(model="rcnn", epochs=6, batch_size=16, learning_rate=3e-3, mirror=False), run_dir=out,
              class_names=NAMES, scenes={k: small_scenes[k] for k in ("train", "validation")})
    report = app.evaluate(out, scenes=test)
    assert report["map50"] > max(0.1, 3 * report["random_boxes_map50"]), report
    assert report["mask_iou"] > 0.3  # matched detections' masks overlap their objects' visible pixels

    exported = app.export_run(out, export_dir=str(tmp_path / "exports"), sample_images=test["image"][:4])
    parity = exported["parity"]["float"]
    assert parity["same_detections"] and parity["max_abs_diff"] < app.FLOAT_TOLERANCE  # boxes, scores and masks
    served = export.run_saved_model(exported["saved_model"], {"images": test["image"][:4].astype(np.float32)})
    assert served["masks"].shape == (4, 10, 64, 64) and served["num_detections"].min() >= 1


def test_two_stage_export_has_masks_and_tflite_parity(rcnn_run, small_scenes, tmp_path):
    """The fast counterpart of the slow test above: the post-NMS signature with masks, SavedModel
    against TFLite."""
    sample = small_scenes["test"]["image"][:4]
    exported = app.export_run(rcnn_run, export_dir=str(tmp_path / "exports"), sample_images=sample)
    parity = exported["parity"]["float"]
    assert parity["same_detections"] and parity["max_abs_diff"] < app.FLOAT_TOLERANCE  # boxes, scores and masks
    served = export.run_saved_model(exported["saved_model"], {"images": sample.astype(np.float32)})
    assert set(served) == {"boxes", "classes", "scores", "num_detections", "masks"}
    assert served["masks"].shape == (4, 10, 64, 64)
    tflite = export.run_tflite(exported["tflite"]["float"], {"images": sample.astype(np.float32)})
    np.testing.assert_array_equal(tflite["num_detections"], served["num_detections"])


# --- the command line and the strategy ---------------------------------------------------------------------------

MIRRORED_TRAINING = """
import sys
from core import distribute
distribute.split_cpu(2)                       # two logical CPUs, before TensorFlow touches a device
from apps.detect import app
from apps.detect.config import TrainConfig
from core import scenes
spec = scenes.SceneSpec(size=64, max_objects=3, min_scale=0.8, max_scale=1.4, clutter=3)
data = {split: scenes.generate(spec, split, count=count, seed=0) for split, count in (("train", 32), ("validation", 8))}
names = list(scenes.class_names("fashion_mnist"))
for strategy, batch in (("default", 8), ("mirrored", 4)):
    config = TrainConfig(model="ssd", epochs=2, batch_size=batch, learning_rate=3e-3, mirror=False)
    app.train(config, run_dir=sys.argv[1] + "/" + strategy, strategy=strategy, scenes=data, class_names=names)
"""


def _history(run_dir):
    import csv

    with open(os.path.join(run_dir, "history.csv")) as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def test_mirrored_training_on_two_cpus_matches_one_device(tmp_path):
    """app.train under MirroredStrategy over two logical CPUs (2 replicas x 4 scenes) against one device (8 scenes):
    the same global batches of the same scenes from the same initial weights."""
    import json

    from conftest import run_python

    result = run_python(["-c", MIRRORED_TRAINING, str(tmp_path)])
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "mirrored" / "config.json") as f:
        recorded = json.load(f)
    assert (recorded["strategy"], recorded["replicas"], recorded["_app"]) == ("mirrored", 2, "detect")
    # The same batches in the same order (core.data shuffles by epoch), equal up to BatchNormalization, whose batch
    # statistics Keras takes per replica (4 scenes, not 8; not synchronized) and whose moving statistics (read by
    # val_loss) are averaged over the replicas. The difference grows with the steps: measured 0.07 % on the first
    # epoch's loss, 5.1 % on the second's, 0.5 % on val_loss. Not a bit-for-bit equality: 1 %, then 10 %, and 3 %.
    one, two = _history(tmp_path / "default"), _history(tmp_path / "mirrored")
    assert len(one) == len(two) == 2
    for epoch, loss_tolerance in ((0, 0.01), (1, 0.10)):
        a, b = one[epoch], two[epoch]
        assert abs(a["loss"] - b["loss"]) <= loss_tolerance * a["loss"], (epoch, a, b)
        assert abs(a["val_loss"] - b["val_loss"]) <= 0.03 * a["val_loss"], (epoch, a, b)


def test_a_runs_config_reruns_it_and_another_models_run_is_refused(ssd_run, capsys):
    from apps.detect.__main__ import main, parse_args
    from core.cli import resolve_config

    rerun = resolve_config(TrainConfig, parse_args(["train", "--config", os.path.join(ssd_run, "config.json")]))
    assert rerun == TrainConfig(model="ssd", epochs=8, batch_size=16, learning_rate=3e-3, mirror=False)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, ["evaluate", "--model", "rcnn", "--run", ssd_run], prog="apps.detect")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"apps.detect: error: --run {ssd_run} holds a ssd run, not rcnn: pass the --run DIR of a rcnn "
                   "run, or leave out --model")


def test_each_verb_lists_its_own_flags_with_their_defaults():
    own = {"train": ["--epochs", "--strategy", "--config", "--run", "(default: ssd)", "rcnn 12"],
           "evaluate": ["--model", "--run", "--limit", "(default: ssd)"],
           "export": ["--run", "--export-dir", "(default: saved_models)"],
           "predict": ["--run", "--resize"],
           "localize": ["--run", "--box-weight", "(default: runs/detect/localize)", "(default: 1.0)"],
           "sliding-window": ["--run", "--seed", "(default: runs/detect/sliding_window)"],
           "rcnn-classic": ["--run", "--export-dir", "(default: runs/detect/rcnn_classic)"]}
    assert not verb_help_problems("apps.detect", own)
