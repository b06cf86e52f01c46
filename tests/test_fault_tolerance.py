"""Fault tolerance of training runs: a loss that becomes NaN, an output folder that cannot be written.

(SIGKILL mid-epoch + resume, atomic best checkpoints and corrupt backups are
covered in test_classify.py and test_training.py.)
"""

import json
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from apps.classify.__main__ import main as classify_main
from conftest import tiny_dataset
from core import training
from core.errors import UserError, run_cli


def _tiny_model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    return model


def test_a_loss_that_becomes_nan_stops_the_run_and_keeps_the_best_checkpoint(tmp_path):
    run_dir = str(tmp_path)
    keras.utils.set_random_seed(0)
    model = _tiny_model()
    # Two sane epochs, then the learning rate explodes (a schedule gone wrong).
    explode = keras.callbacks.LearningRateScheduler(lambda epoch, lr: 0.1 if epoch < 2 else 1e30)
    with pytest.raises(UserError) as error:
        training.fit(model, tiny_dataset(0), tiny_dataset(1), epochs=6, run_dir=run_dir, extra_callbacks=[explode])
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("training stopped: loss became ") and " at epoch 3, batch " in message, message
    best = json.load(open(os.path.join(run_dir, "model.keras.best.json")))
    assert best["epoch"] in (0, 1) and math.isfinite(best["best"])
    assert f"(epoch {best['epoch'] + 1}, val_loss" in message and "is kept" in message

    # The kept checkpoint is the good model: finite weights, and its validation loss is the recorded best.
    kept = training.load_trained_model(run_dir, compile=True)
    assert all(np.isfinite(w).all() for w in kept.get_weights())
    assert kept.evaluate(tiny_dataset(1), verbose=0) == pytest.approx(best["best"], rel=1e-4)
    # It stopped at the NaN epoch instead of running all six, and nothing half-written is left behind.
    epochs = [int(line.split(",")[0]) for line in open(os.path.join(run_dir, "history.csv")).read().split()[1:]]
    assert epochs == [0, 1, 2]
    assert not [name for name in os.listdir(run_dir) if ".tmp" in name]
    assert os.path.exists(os.path.join(run_dir, "learning_curves.png"))


def test_a_loss_that_overflows_in_the_first_batch_says_no_checkpoint_exists(tmp_path):
    # Finite data whose loss overflows float32 whatever the CPU: a linear model's outputs are about
    # 1e30, their squares 1e60 > 3.4e38 = inf (no ReLU in the way that could map a NaN to 0).
    keras.utils.set_random_seed(0)
    x = np.full((32, 4), 1e30, np.float32)
    data = tf.data.Dataset.from_tensor_slices((x, np.zeros((32, 1), np.float32))).batch(16)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    with pytest.raises(UserError, match=r"loss became inf at epoch 1, batch 1; no checkpoint was saved"):
        training.fit(model, data, data, epochs=3, run_dir=str(tmp_path))
    assert not os.path.exists(tmp_path / "model.keras")


def test_nan_data_is_refused_before_training_not_learned(tmp_path):
    # On oneDNN CPUs the ReLU maps NaN to 0 and the loss stays finite: only a look at the data catches it.
    x = np.full((32, 4), np.nan, np.float32)  # corrupt data: every feature NaN
    data = tf.data.Dataset.from_tensor_slices((x, np.zeros(32, np.int32))).batch(16)
    model = _tiny_model()
    with pytest.raises(UserError, match=r"^the training data has a non-finite value \(nan\) in its inputs at "
                                        r"example 0 .*; clean the data first$"):
        training.fit(model, data, data, epochs=3, run_dir=str(tmp_path / "run"))
    assert int(model.optimizer.iterations.numpy()) == 0 and not os.path.exists(tmp_path / "run")


def test_keep_last_mode_saves_every_finite_epoch_and_stops_on_nan_with_the_last_good_one(tmp_path):
    """monitor=None (GANs: no validation loss) keeps the last epoch, not the lowest loss."""
    keras.utils.set_random_seed(0)
    model = _tiny_model()
    training.fit(model, tiny_dataset(0), None, epochs=2, run_dir=str(tmp_path / "a"), monitor=None)
    assert json.load(open(tmp_path / "a" / "model.keras.best.json")) == {"best": None, "epoch": 1, "monitor": None}
    kept = training.load_trained_model(str(tmp_path / "a"))
    assert all(np.array_equal(a, b) for a, b in zip(kept.get_weights(), model.get_weights()))

    explode = keras.callbacks.LearningRateScheduler(lambda epoch, lr: 0.1 if epoch < 2 else 1e30)
    with pytest.raises(UserError, match=r"loss became .* at epoch 3, batch .*; the checkpoint .*model\.keras "
                                        r"\(epoch 2\) is kept"):
        training.fit(_tiny_model(), tiny_dataset(0), None, epochs=5, run_dir=str(tmp_path / "b"), monitor=None,
                     extra_callbacks=[explode])
    kept = training.load_trained_model(str(tmp_path / "b"))
    assert all(np.isfinite(w).all() for w in kept.get_weights())
    with pytest.raises(UserError, match="needs a validation loss"):
        training.fit(_tiny_model(), tiny_dataset(0), None, epochs=1, run_dir=str(tmp_path / "c"), monitor=None,
                     patience=2)


def test_classify_cli_with_an_absurd_learning_rate_exits_with_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--model", "lenet5", "--dataset", "digits", "--limit", "300", "--epochs", "3",
            "--batch-size", "64", "--optimizer", "sgd", "--learning-rate", "1e30", "--run", str(out)]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(classify_main, argv, prog="apps.classify")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("apps.classify: error: training stopped: loss became "), err
    assert "at epoch 1, batch" in err and "try a lower learning rate" in err
    assert not (out / "backup").exists()  # a rerun does not resume into the NaN weights


def test_a_checkpoint_that_cannot_be_written_stops_with_a_message_and_keeps_the_last_one(tmp_path):
    run_dir = str(tmp_path)
    keras.utils.set_random_seed(0)

    class BlockTheNextSave(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:  # after epoch 1's checkpoint, its temporary path stops being writable
                os.mkdir(os.path.join(run_dir, "model.keras.tmp.keras"))

    with pytest.raises(UserError, match=r"cannot write the checkpoint .*model.keras: "):
        training.fit(_tiny_model(), tiny_dataset(0), tiny_dataset(1), epochs=4, run_dir=run_dir,
                     extra_callbacks=[BlockTheNextSave()])
    assert json.load(open(os.path.join(run_dir, "model.keras.best.json")))["epoch"] == 0
    assert all(np.isfinite(w).all() for w in training.load_trained_model(run_dir).get_weights())


def test_an_output_folder_that_cannot_be_written_is_a_user_error(tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("a regular file, so no folder can be made under it")
    with pytest.raises(UserError, match=r"cannot write to the output folder .*notes.txt/run: Not a directory"):
        training.make_output_dir(str(a_file / "run"))
    with pytest.raises(UserError, match="cannot write to the output folder"):
        training.save_config(str(a_file / "run"), {"model": "m"})
    assert training.make_output_dir(str(tmp_path / "new" / "run")) == str(tmp_path / "new" / "run")
    assert os.listdir(tmp_path / "new" / "run") == []  # the write probe leaves nothing behind

    if os.geteuid() != 0:  # root ignores permission bits
        read_only = tmp_path / "read_only"
        read_only.mkdir()
        read_only.chmod(0o500)
        try:
            with pytest.raises(UserError, match="Permission denied"):
                training.make_output_dir(str(read_only))
        finally:
            read_only.chmod(0o700)
