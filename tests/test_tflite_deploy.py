"""TFLite deployment: the size/parity/accuracy/latency table and the on-device
runner that needs only ai-edge-litert and NumPy."""

import json
import os

import numpy as np
import pytest

from conftest import run_python

BLOCK_TF = ("import runpy, sys; sys.modules['tensorflow'] = None; sys.argv = sys.argv[1:]; "
            "runpy.run_module(sys.argv[0], run_name='__main__')")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A LeNet-5 exported with float/dynamic/int8 TFLite files, labelled as Fashion-MNIST."""
    import keras

    from apps.classify.models import build_model
    from core import data, export

    keras.utils.set_random_seed(3)
    model = build_model("lenet5", (28, 28, 1), 10)
    root = str(tmp_path_factory.mktemp("tflite_models"))
    x = np.random.RandomState(1).uniform(0, 255, (16, 28, 28, 1)).astype(np.float32)
    report = export.export_model(model, os.path.join(root, "classify"), input_names=["images"],
                                 output_names=["probabilities"], sample_inputs={"images": x},
                                 representative_data=[x[:8], x[8:]], class_names=list(data.FASHION_MNIST_CLASSES),
                                 log=lambda *a: None)
    return root, report, model, x


def test_table_for_every_app(exported):
    from serving import tflite_report

    root, report, model, _ = exported
    os.remove(report["tflite"]["dynamic"])  # a missing file is converted again
    logs = []
    reports = tflite_report.main(root, limit=300, latency_runs=20, log=logs.append)
    assert [r["app"] for r in reports] == ["classify"]
    (result,) = reports
    assert result["dataset"] == "fashion_mnist" and result["examples"] == 300
    rows = {row["kind"]: row for row in result["rows"]}
    assert set(rows) == {"SavedModel", "float", "dynamic", "int8"}
    assert os.path.isfile(report["tflite"]["dynamic"])
    assert rows["float"]["max_abs_diff"] < 1e-4
    assert rows["dynamic"]["max_abs_diff"] < 0.1 and rows["int8"]["max_abs_diff"] < 0.2
    assert abs(rows["float"]["accuracy"] - rows["SavedModel"]["accuracy"]) <= 1 / 300
    assert rows["dynamic"]["size_kib"] < rows["float"]["size_kib"] / 2
    assert all(row["latency_ms_mean"] > 0 and row["latency_ms_p95"] > 0 for row in rows.values())
    assert len(logs[-1].splitlines()) == 2 + 4 and "| classify | 1 | int8 |" in logs[-1]
    with open(os.path.join(root, "classify", "tflite", "1", "report.json")) as f:
        assert json.load(f)["rows"][1]["kind"] == "float"


def test_device_runner_without_tensorflow(exported, tmp_path):
    from core import export

    root, report, model, x = exported
    path = report["tflite"]["float"]
    np.save(tmp_path / "batch.npy", x[:3])
    np.save(tmp_path / "one.npy", x[3])
    expected = model.predict(x[:4], verbose=0)

    result = run_python(["-c", BLOCK_TF, "core.tflite_run", path, str(tmp_path / "batch.npy"),
                         str(tmp_path / "one.npy"), "--json"], timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    np.testing.assert_allclose(json.loads(result.stdout)["probabilities"], expected, atol=1e-4)

    result = run_python(["-c", BLOCK_TF, "serving", "tflite-run", path, str(tmp_path / "one.npy"),
                         "--top", "2"], timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    best = int(expected[3].argmax())
    from core.data import FASHION_MNIST_CLASSES

    assert result.stdout.startswith(f"{tmp_path / 'one.npy'}: {FASHION_MNIST_CLASSES[best]} {expected[3][best]:.3f}")

    result = run_python(["-c", BLOCK_TF, "core.tflite_run", report["tflite"]["int8"]], timeout=60)
    assert json.loads(result.stdout)["inputs"]["images"] == ["float32", [-1, 28, 28, 1]]

    np.save(tmp_path / "bad.npy", x[:2, :20])
    result = run_python(["-c", BLOCK_TF, "core.tflite_run", path, str(tmp_path / "bad.npy")], timeout=60)
    assert result.returncode == 2 and "expects [-1, 28, 28, 1]" in result.stderr
    assert "Traceback" not in result.stderr
    # the same interpreter in-process agrees with core.export's own runner
    np.testing.assert_allclose(export.run_tflite(path, {"images": x[:4]})["probabilities"], expected, atol=1e-4)


def test_table_feeds_each_export_its_recorded_inputs(tmp_path):
    """`make tflite` over exports whose inputs are not the classifier's: a 96x96 model labelled with the
    Fashion-MNIST class names (as the detector is) and a model of integer token ids (as the sequence models
    are) are fed the sample inputs their export recorded, not 28x28 images or random floats."""
    import keras

    from core import data, export
    from serving import tflite_report

    keras.utils.set_random_seed(0)
    scenes = keras.Sequential([keras.Input((96, 96, 1)), keras.layers.Conv2D(4, 3, strides=4),
                               keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10, activation="softmax")])
    tokens = keras.Sequential([keras.Input((12,), dtype="int32"), keras.layers.Embedding(50, 8),
                               keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(3)])
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (6, 96, 96, 1)).astype(np.float32)
    ids = rng.integers(0, 50, (6, 12)).astype(np.int32)  # ids up to 49: random ids in [0, 10) would miss most rows
    root = tmp_path / "saved_models"
    export.export_model(scenes, str(root / "scenes"), input_names=["images"], output_names=["scores"],
                        sample_inputs={"images": images}, class_names=list(data.FASHION_MNIST_CLASSES),
                        log=lambda *a: None)
    export.export_model(tokens, str(root / "tokens"), input_names=["ids"], output_names=["logits"],
                        sample_inputs={"ids": ids}, log=lambda *a: None)
    spec = json.loads((root / "tokens" / "1" / "assets.extra" / "input_spec.json").read_text())
    assert spec == {"ids": {"dtype": "int32", "shape": [None, 12], "min": int(ids.min()), "max": int(ids.max())}}
    np.testing.assert_array_equal(export.read_sample_inputs(str(root / "tokens" / "1"))["ids"], ids)

    logs = []
    reports = {r["app"]: r for r in tflite_report.main(str(root), limit=50, latency_runs=3, log=logs.append)}
    assert set(reports) == {"scenes", "tokens"}
    for report in reports.values():
        assert report["dataset"] is None and report["inputs"] == "inputs recorded by the export"
        assert report["examples"] == 6
        rows = {row["kind"]: row for row in report["rows"]}
        assert rows["float"]["max_abs_diff"] < 1e-4 and rows["float"]["accuracy"] is None
    assert "(reported)" in logs[-1]


def test_max_abs_difference_is_a_figure_or_an_error():
    from core import export

    inf = np.inf
    assert export.max_abs_difference({"y": np.array([1.0, -inf])}, {"y": np.array([1.5, -inf])}) == 0.5
    assert export.max_abs_difference({"y": np.array([1.0, 2.0])}, {"y": np.array([1.0, inf])}) == inf
    with pytest.raises(ValueError, match="NaN"):
        export.max_abs_difference({"y": np.array([1.0])}, {"y": np.array([np.nan])})
    with pytest.raises(ValueError, match="shape"):
        export.max_abs_difference({"y": np.zeros((2, 3))}, {"y": np.zeros((3, 3))})
