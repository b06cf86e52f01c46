"""core.training: atomic best-model checkpoints, resume state, run-folder configs."""

import json
import os

import keras
import numpy as np
import pytest

from conftest import tiny_dataset
from core import training
from core.errors import UserError


def _tiny_model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    return model


def test_best_checkpoint_saves_only_improvements_atomically(tmp_path):
    path = str(tmp_path / "model.keras")
    checkpoint = training.BestModelCheckpoint(path)
    model = _tiny_model()
    checkpoint.set_model(model)
    checkpoint.on_train_begin()
    checkpoint.on_epoch_end(0, {"val_loss": 1.0})
    first = os.path.getmtime(path)
    checkpoint.on_epoch_end(1, {"val_loss": 2.0})  # worse: not saved
    assert os.path.getmtime(path) == first
    assert json.load(open(path + ".best.json")) == {"best": 1.0, "epoch": 0, "monitor": "val_loss"}
    checkpoint.on_epoch_end(2, {"val_loss": 0.5})
    assert json.load(open(path + ".best.json"))["epoch"] == 2
    assert sorted(os.listdir(tmp_path)) == ["model.keras", "model.keras.best.json"]  # no temporary left
    np.testing.assert_allclose(keras.models.load_model(path).get_weights()[0], model.get_weights()[0])

    # A resumed run compares against the best before the kill, not against infinity.
    resumed = training.BestModelCheckpoint(path)
    resumed.set_model(model)
    resumed.on_train_begin()
    assert resumed.best == 0.5
    accuracy = training.BestModelCheckpoint(str(tmp_path / "acc.keras"), monitor="val_accuracy")
    assert accuracy.mode == "max"


def test_fit_resumes_from_the_previous_backup_when_the_latest_is_corrupt(tmp_path):
    run_dir = str(tmp_path)
    model = _tiny_model()

    class StopAfterTwoEpochs(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt  # a kill after epoch 2's backup was written

    with pytest.raises(KeyboardInterrupt):
        training.fit(
            model, tiny_dataset(0), tiny_dataset(1), epochs=5, run_dir=run_dir, extra_callbacks=[StopAfterTwoEpochs()]
        )
    backup = os.path.join(run_dir, "backup")
    assert sorted(os.listdir(backup)) == ["epoch-000001-batch-000000", "epoch-000002-batch-000000"]
    with open(os.path.join(backup, "epoch-000002-batch-000000", "model.weights.h5"), "wb") as f:
        f.write(b"half-written")  # as if the disk had lost it

    training.fit(_tiny_model(), tiny_dataset(0), tiny_dataset(1), epochs=5, run_dir=run_dir)
    epochs = [
        int(line.split(",")[0]) for line in open(os.path.join(run_dir, "history.csv")).read().split("\n")[1:] if line
    ]
    # Epoch 0 and 1 ran before the kill; the previous backup (after epoch 0)
    # was used, so epoch 1 is redone (its first row trimmed), then 2..4.
    assert epochs == [0, 1, 2, 3, 4]
    assert os.path.exists(os.path.join(run_dir, "model.keras"))
    assert os.path.exists(os.path.join(run_dir, "learning_curves.png"))
    # A new run in the finished run's folder (no backup left: not a resume) keeps only its own epochs.
    training.fit(_tiny_model(), tiny_dataset(0), tiny_dataset(1), epochs=2, run_dir=run_dir)
    assert [line.split(",")[0] for line in open(os.path.join(run_dir, "history.csv")).read().split()[1:]] == ["0", "1"]


def test_run_folder_config_refuses_a_different_run(tmp_path):
    training.save_config(str(tmp_path), {"model": "a", "dataset": "d"}, identity_keys=("model", "dataset"))
    training.save_config(str(tmp_path), {"model": "a", "dataset": "d", "epochs": 9}, identity_keys=("model",))
    assert training.load_config(str(tmp_path))["epochs"] == 9
    with pytest.raises(UserError, match="holds another run \\(model='a'\\)"):
        training.save_config(str(tmp_path), {"model": "b"}, identity_keys=("model",))
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(UserError, match="corrupt .*config.json"):
        training.load_config(str(tmp_path))
