"""Data with NaN or infinity is refused up front with one line, not learned or answered.

On CPUs with oneDNN a ReLU maps NaN to 0, so corrupt data need not make the
loss NaN or a prediction visibly wrong; these tests therefore look at what
happens before any model runs (an error naming the first bad example, weights
untouched, no run files), never at how a CPU propagates NaN through an op.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import run_python
from core import data, training
from core.errors import UserError, run_cli

# TensorFlow's and LiteRT's start-up lines are not the program's output.
NOISE = ("WARNING: All log messages before absl::InitializeLog()", "I0000 ", "E0000 ", "W0000 ",
         "To enable the following instructions", "INFO: ")


def error_lines(stderr):
    return [line for line in stderr.strip().splitlines() if line.strip() and not line.startswith(NOISE)]


def noisy_loader(split, part, value, index=17):
    """An offline-dataset loader (the `OFFLINE_DATASETS` kind) of 40 + 20 float images with float labels,
    `value` at example `index` (and again at 30, so "first" is tested) of `split`'s `part`."""
    rng = np.random.default_rng(0)
    arrays = {s: [rng.uniform(0, 255, (n, 28, 28, 1)).astype(np.float32), (np.arange(n) % 10).astype(np.float32)]
              for s, n in (("train", 40), ("test", 20))}
    if value is not None:
        x_or_y = arrays[split][0 if part == "inputs" else 1]
        for i in (index, 30 if split == "train" else 19):
            x_or_y[i] = value
    return lambda: (tuple(arrays["train"]), tuple(arrays["test"]))


@pytest.mark.parametrize("split, part, value, shown", [
    ("train", "inputs", np.nan, "nan"), ("train", "inputs", np.inf, "inf"),
    ("train", "labels", np.nan, "nan"), ("test", "labels", -np.inf, "-inf")])
def test_the_loader_refuses_a_dataset_with_a_nan_or_an_inf_naming_the_first_bad_example(
        monkeypatch, split, part, value, shown):
    monkeypatch.setitem(data.OFFLINE_DATASETS, "noisy", (noisy_loader(split, part, value), data.DIGIT_CLASSES))
    with pytest.raises(UserError) as error:
        data.load_dataset("noisy")
    assert str(error.value) == (f"dataset 'noisy' ({split} split) has a non-finite value ({shown}) in its {part} "
                                f"at example 17; clean the data first")

    monkeypatch.setitem(data.OFFLINE_DATASETS, "noisy", (noisy_loader(split, part, None), data.DIGIT_CLASSES))
    assert data.load_dataset("noisy").num_train == 36  # the same data, clean, loads


def _tiny_model(loss="sparse_categorical_crossentropy", outputs=3):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(outputs, activation="softmax" if outputs > 1 else None)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss)
    return model


def test_fit_refuses_a_dataset_with_a_nan_before_any_step_or_file(tmp_path):
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    x[37, 2] = np.nan  # in the third batch of 16: a per-step check would have trained two steps first
    y = (x[:, 0] > 0).astype(np.int32)
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    model = _tiny_model()
    before = [w.copy() for w in model.get_weights()]
    run_dir = tmp_path / "run"
    with pytest.raises(UserError) as error:
        training.fit(model, train, None, epochs=3, run_dir=str(run_dir), monitor=None)
    assert str(error.value) == ("the training data has a non-finite value (nan) in its inputs at example 37 "
                                "(counting from the start of the pipeline); clean the data first")
    assert int(model.optimizer.iterations.numpy()) == 0
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert not run_dir.exists()  # no checkpoint, backup, history or TensorBoard files

    # Float labels in the validation data (a regression) are read too.
    targets = x[:, :1].copy()
    targets[37] = 0.0
    x[37, 2] = 0.0
    targets[5] = np.inf
    regression = _tiny_model("mse", outputs=1)
    val = tf.data.Dataset.from_tensor_slices((x, targets)).batch(16)
    with pytest.raises(UserError, match=r"^the validation data has a non-finite value \(inf\) in its labels at "
                                        r"example 5 \("):
        training.fit(regression, tf.data.Dataset.from_tensor_slices((x, x[:, :1])).batch(16), val, epochs=1,
                     run_dir=str(run_dir))
    assert not run_dir.exists()


def test_batched_refuses_a_nan_before_its_shuffle_and_leaves_the_shuffle_order_alone():
    x = np.arange(40 * 3, dtype=np.float32).reshape(40, 3)
    y = np.arange(40, dtype=np.int32)
    bad = x.copy()
    bad[23, 1] = np.nan
    with pytest.raises(UserError, match=r"^the training split has a non-finite value \(nan\) in its inputs at "
                                        r"example 23 "):
        data.batched(tf.data.Dataset.from_tensor_slices((bad, y)), 8, shuffle=True, seed=3,
                     what="the training split")

    # The check reads the cached, unshuffled pipeline: each epoch's order is
    # the one the same seeded shuffle (by epoch, core.data) gives without any check.
    checked = data.batched(tf.data.Dataset.from_tensor_slices((x, y)), 8, shuffle=True, seed=3)
    reference, _ = data._shuffled_by_epoch(tf.data.Dataset.from_tensor_slices((x, y)).cache(), 10_000, 3)
    reference = reference.batch(8)
    for _ in range(2):  # two epochs
        order = np.concatenate([labels for _, labels in checked.as_numpy_iterator()])
        expected = np.concatenate([labels for _, labels in reference.as_numpy_iterator()])
        np.testing.assert_array_equal(order, expected)


@pytest.fixture(scope="module")
def tiny_tflite(tmp_path_factory):
    """A Dense(3 -> 2) exported through core.export: SavedModel, then a float .tflite."""
    from core import export

    root = tmp_path_factory.mktemp("non_finite_tflite")
    keras.utils.set_random_seed(0)
    dense = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    export.export_saved_model(dense, str(root / "dense"), ["x"], ["y"])
    return root, export.convert_to_tflite(str(root / "dense"), str(root / "dense.tflite"))


def test_tflite_run_refuses_a_nan_input_with_one_line(tiny_tflite):
    root, model = tiny_tflite
    batch = np.ones((4, 3), np.float32)
    np.save(root / "clean.npy", batch)
    batch[2, 1] = np.nan
    np.save(root / "nan.npy", batch)

    result = run_python(["-m", "core.tflite_run", model, str(root / "clean.npy"), "--json"], timeout=60)
    assert result.returncode == 0 and len(json.loads(result.stdout)["y"]) == 4, result.stderr[-1500:]
    result = run_python(["-m", "core.tflite_run", model, str(root / "nan.npy"), "--json"], timeout=60)
    assert result.returncode == 2 and result.stdout == "", (result.returncode, result.stdout, result.stderr[-1500:])
    assert error_lines(result.stderr) == [f"tflite-run: error: {root / 'nan.npy'} has a non-finite value (nan) "
                                          f"at example 2; clean the data first"]


def test_tflite_run_refuses_a_text_file_named_npy_with_one_line(tiny_tflite):
    root, model = tiny_tflite
    (root / "notes.npy").write_text("these are notes, not an array\n")
    np.save(root / "whole.npy", np.ones((4, 3), np.float32))
    (root / "cut.npy").write_bytes((root / "whole.npy").read_bytes()[:-5])  # a copy cut short
    np.save(root / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)  # a pickle inside
    for name, message in (("notes.npy", "not a NumPy .npy file"), ("cut.npy", "Failed to read all data"),
                          ("objects.npy", "Object arrays cannot be loaded")):
        result = run_python(["-m", "core.tflite_run", model, str(root / name)], timeout=60)
        assert result.returncode == 2, (result.returncode, result.stderr[-1500:])
        lines = error_lines(result.stderr)
        assert len(lines) == 1, lines
        assert lines[0].startswith(f"tflite-run: error: cannot read {root / name}: {message}"), lines
        assert lines[0].endswith("; write it with numpy.save"), lines


def test_classify_predict_refuses_a_float_image_with_a_nan_with_one_line(tmp_path, capsys):
    """In this process through `run_cli`, as `python -m apps.classify` runs it (see test_cli_errors.py)."""
    from PIL import Image

    from apps.classify.__main__ import main
    from apps.classify.models import build_model

    run = tmp_path / "run"
    run.mkdir()
    keras.utils.set_random_seed(0)
    build_model("lenet5", (28, 28, 1), 10).save(run / "model.keras")
    (run / "config.json").write_text(json.dumps(dict(app="classify", model="lenet5", class_names=list("0123456789"),
                                                     image_shape=[28, 28, 1])))
    pixels = np.full((28, 28), 128.0, np.float32)
    pixels[3, 5] = np.nan  # 8-bit conversion would silently make it black
    Image.fromarray(pixels, mode="F").save(tmp_path / "scan.tiff")

    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, ["predict", str(tmp_path / "scan.tiff"), "--run", str(run)], prog="apps.classify")
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""  # no confident answer
    assert error_lines(err) == [f"apps.classify: error: image {tmp_path / 'scan.tiff'} has a non-finite "
                                f"value (nan) at pixel (row 3, column 5); clean the data first"]
