"""Checkpoints that degrade loudly and never duplicate, and writes that fail cleanly (core.checkpoints).

Every resumable run keeps its last two checkpoints (Keras apps: `backup/` of the
run folder, written by `core.training.fit`; DQN: `checkpoints/`). A damaged
newest one (truncated JSON, truncated weights, a missing file, counters that
disagree) is reported in one line and the previous one is used; the CSV
histories are trimmed to it, so no epoch or step is logged twice. With both
damaged, resuming is a one-line error (exit 2). A checkpoint or export that
cannot be written (full disk, read-only folder: a small tmpfs, since root
ignores permission bits) is a one-line error and leaves the earlier ones whole.
"""

import contextlib
import csv
import os
import shutil
import subprocess

import keras
import numpy as np
import pytest

from apps.rl import dqn
from conftest import tiny_dataset
from core import export, training
from core.errors import UserError, run_cli

NEWEST, PREVIOUS = "epoch-000002-batch-000000", "epoch-000001-batch-000000"


def _tiny_model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    return model


def csv_column(path, column):
    with open(path, newline="") as f:
        return [int(row[column]) for row in csv.DictReader(f)]


def truncate(path):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])


class KillInThirdEpoch(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            raise KeyboardInterrupt  # as a kill: after the backups of epochs 1 and 2


class WeightsAtStart(keras.callbacks.Callback):
    """The weights training starts from (after the resume backup was loaded)."""

    def on_epoch_begin(self, epoch, logs=None):
        if not hasattr(self, "weights"):
            self.weights = self.model.get_weights()


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory):
    """`fit` for 5 epochs (4 batches each) killed during the third: two backups, two history rows."""
    run_dir = str(tmp_path_factory.mktemp("killed") / "run")
    keras.utils.set_random_seed(0)
    with pytest.raises(KeyboardInterrupt):
        training.fit(_tiny_model(), tiny_dataset(0), tiny_dataset(1), epochs=5, run_dir=run_dir,
                     extra_callbacks=[KillInThirdEpoch()])
    assert sorted(os.listdir(os.path.join(run_dir, "backup"))) == [PREVIOUS, NEWEST]
    assert csv_column(os.path.join(run_dir, "history.csv"), "epoch") == [0, 1]
    return run_dir


def damage_keras_backup(backup, how):
    newest = os.path.join(backup, NEWEST)
    if how == "truncated json":
        truncate(os.path.join(newest, "state.json"))
    elif how == "truncated weights":
        truncate(os.path.join(newest, "model.weights.h5"))
    elif how == "missing file":
        os.remove(os.path.join(newest, "model.weights.h5"))
    else:  # counters disagree: the state of another checkpoint
        shutil.copy(os.path.join(backup, PREVIOUS, "state.json"), os.path.join(newest, "state.json"))


@pytest.mark.parametrize("how, reason", [
    ("truncated json", "state.json: "),
    ("truncated weights", "model.weights.h5: Unable to"),
    ("missing file", "model.weights.h5 is missing"),
    ("counters disagree", "state.json says epoch 1, batch 0"),
])
def test_a_damaged_newest_backup_resumes_from_the_previous_one(killed_run, tmp_path, capsys, how, reason):
    run_dir = str(tmp_path / "run")
    shutil.copytree(killed_run, run_dir)
    backup = os.path.join(run_dir, "backup")
    damage_keras_backup(backup, how)
    previous = _tiny_model()
    previous.load_weights(os.path.join(backup, PREVIOUS, "model.weights.h5"))
    capsys.readouterr()

    start = WeightsAtStart()
    history = training.fit(_tiny_model(), tiny_dataset(0), tiny_dataset(1), epochs=5, run_dir=run_dir,
                           extra_callbacks=[start])
    notes = [line for line in capsys.readouterr().out.splitlines() if "checkpoint" in line]
    assert len(notes) == 1 and notes[0].startswith(
        f"resuming from the previous checkpoint (epoch 1): the newest is corrupt: {NEWEST}: {reason}"), notes
    assert history.epoch == [1, 2, 3, 4]  # after epoch 1: not from scratch, not from the damaged epoch 2
    for resumed, saved in zip(start.weights, previous.get_weights()):
        np.testing.assert_array_equal(resumed, saved)
    assert csv_column(os.path.join(run_dir, "history.csv"), "epoch") == [0, 1, 2, 3, 4]  # epoch 1 once
    assert not os.path.exists(backup)  # the run finished: a rerun starts afresh


def test_when_no_backup_is_usable_resuming_is_a_one_line_error(killed_run, tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    shutil.copytree(killed_run, run_dir)
    backup = os.path.join(run_dir, "backup")
    truncate(os.path.join(backup, NEWEST, "state.json"))
    truncate(os.path.join(backup, PREVIOUS, "model.weights.h5"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda argv: training.fit(_tiny_model(), tiny_dataset(0), tiny_dataset(1), epochs=5,
                                          run_dir=run_dir), [], prog="apps.test")
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1, message
    assert message.startswith(f"apps.test: error: no usable checkpoint in {backup} ({NEWEST}: state.json: ")
    assert f"; {PREVIOUS}: model.weights.h5: " in message and message.endswith(f"delete {backup} to start over")
    assert sorted(os.listdir(backup)) == [PREVIOUS, NEWEST]  # nothing deleted behind the user's back
    assert csv_column(os.path.join(run_dir, "history.csv"), "epoch") == [0, 1]


# -- DQN ------------------------------------------------------------------------------------------------
DQN_SETTINGS = dict(dqn.PRESETS["cartpole"], num_envs=2, buffer_size=64, batch_size=4, learning_starts=1000,
                    jit=False, log_every=4, checkpoint_every=8)  # as DQN_CLI below
TIMING_COLUMNS = ("env_steps_per_s", "updates_per_s", "wall_s")


def dqn_config(steps):
    return dqn.DQNConfig.from_dict(dict(DQN_SETTINGS, steps=steps))


def csv_rows(path):
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def dqn_runs(tmp_path_factory):
    """A CartPole run stopped at 16 agent steps (checkpoints at 8 and 16), and one that went to 24."""
    base = tmp_path_factory.mktemp("dqn")
    stopped, straight = str(base / "stopped"), str(base / "straight")
    dqn.train(dqn_config(16), stopped, strategy="default", log=lambda *a: None)
    dqn.train(dqn_config(24), straight, strategy="default", log=lambda *a: None)
    assert sorted(os.listdir(os.path.join(stopped, dqn.CHECKPOINTS))) == ["step-000000000008", "step-000000000016"]
    return stopped, straight


def damage_dqn_checkpoint(folder, how):
    newest = os.path.join(folder, "step-000000000016")
    if how == "truncated json":
        truncate(os.path.join(newest, "state.json"))
    elif how == "truncated weights":
        truncate(next(os.path.join(newest, f) for f in os.listdir(newest) if f.startswith("model.data")))
    elif how == "missing file":
        os.remove(os.path.join(newest, "replay.npz"))
    else:  # counters disagree
        shutil.copy(os.path.join(folder, "step-000000000008", "state.json"), os.path.join(newest, "state.json"))


@pytest.mark.parametrize("how, reason", [
    ("truncated json", ""),
    ("truncated weights", ""),
    ("missing file", "replay.npz missing"),
    ("counters disagree", "its agent step counters disagree (folder 16, state.json 8, model 16)"),
])
def test_a_damaged_newest_dqn_checkpoint_resumes_from_the_previous_one(dqn_runs, tmp_path, how, reason):
    stopped, straight = dqn_runs
    out = str(tmp_path / "run")
    shutil.copytree(stopped, out)
    damage_dqn_checkpoint(os.path.join(out, dqn.CHECKPOINTS), how)
    messages = []
    dqn.train(dqn_config(24), out, strategy="default", log=messages.append)
    notes = [m for m in messages if "checkpoint" in m]
    assert len(notes) == 1 and notes[0].startswith(
        "resuming from the previous checkpoint (agent step 8): the newest is corrupt: step-000000000016: "
        + reason), notes
    assert any(m.startswith(f"resumed {out} at agent step 8 ") for m in messages)
    # exactly the run that never stopped: no step logged twice, none missing
    assert csv_column(os.path.join(out, "train.csv"), "env_step") == [4, 8, 12, 16, 20, 24]
    for name in ("train.csv", "episodes.csv"):
        assert csv_rows(os.path.join(out, name)) == csv_rows(os.path.join(straight, name)), name
    resumed, reference = dqn.checkpoint_contents(out), dqn.checkpoint_contents(straight)
    assert sorted(resumed) == sorted(reference)
    for key in resumed:
        np.testing.assert_array_equal(np.asarray(resumed[key]), np.asarray(reference[key]), err_msg=key)
    assert sorted(os.listdir(os.path.join(out, dqn.CHECKPOINTS))) == ["step-000000000016", "step-000000000024"]


DQN_CLI = ["train", "--task", "dqn", "--preset", "cartpole", "--num-envs", "2", "--buffer-size", "64",
           "--batch-size", "4", "--learning-starts", "1000", "--no-jit", "--strategy", "default",
           "--log-every", "4", "--checkpoint-every", "8"]


def test_when_no_dqn_checkpoint_is_usable_resuming_is_a_one_line_error(dqn_runs, tmp_path, capsys):
    from apps.rl.__main__ import main

    out = str(tmp_path / "run")
    shutil.copytree(dqn_runs[0], out)
    folder = os.path.join(out, dqn.CHECKPOINTS)
    truncate(os.path.join(folder, "step-000000000016", "state.json"))
    os.remove(os.path.join(folder, "step-000000000008", "model.index"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, DQN_CLI + ["--steps", "24", "--run", out], prog="apps.rl")
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1, message
    assert message.startswith(f"apps.rl: error: no usable checkpoint in {folder} (step-000000000016: ")
    assert "; step-000000000008: model.index missing)" in message and message.endswith("to start over")


# -- write faults -----------------------------------------------------------------------------------------
@contextlib.contextmanager
def small_disk(path, size="1m"):
    """A tmpfs of `size` at `path`: a disk that can be filled or made read-only, even for root."""
    os.makedirs(path, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], check=True)


def break_disk(path, fault):
    """Fill the tmpfs at `path` to the last byte, or remount it read-only."""
    if fault == "read-only":
        subprocess.run(["mount", "-o", "remount,ro", path], check=True, capture_output=True)
        return
    with open(os.path.join(path, "filler"), "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:  # ENOSPC
            pass


def mend_disk(path, fault):
    if fault == "read-only":
        subprocess.run(["mount", "-o", "remount,rw", path], check=True, capture_output=True)
    else:
        os.remove(os.path.join(path, "filler"))


REASONS = {"full": "No space left on device", "read-only": "Read-only file system"}


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_a_backup_that_cannot_be_written_keeps_the_previous_one(tmp_path, fault):
    run_dir = str(tmp_path / "run")
    backup = os.path.join(run_dir, "backup")

    class BreakTheDisk(keras.callbacks.Callback):  # runs before the backup of the epoch is written
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                break_disk(backup, fault)

    with small_disk(backup):
        with pytest.raises(UserError) as error:
            training.fit(_tiny_model(), tiny_dataset(0), tiny_dataset(1), epochs=4, run_dir=run_dir,
                         extra_callbacks=[BreakTheDisk()])
        message = str(error.value)
        assert message == (f"cannot write the checkpoint {backup}/{NEWEST}: {REASONS[fault]}; "
                           f"{backup}/{PREVIOUS} is kept")
        assert sorted(n for n in os.listdir(backup) if n != "filler") == [PREVIOUS]  # nothing half-written
        mend_disk(backup, fault)
        history = training.fit(_tiny_model(), tiny_dataset(0), tiny_dataset(1), epochs=4, run_dir=run_dir)
        assert history.epoch == [1, 2, 3]  # the kept backup was whole
        assert csv_column(os.path.join(run_dir, "history.csv"), "epoch") == [0, 1, 2, 3]


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_a_dqn_checkpoint_that_cannot_be_written_keeps_the_previous_one(tmp_path, capsys, fault):
    from apps.rl.__main__ import main

    out = str(tmp_path / "run")
    folder = os.path.join(out, dqn.CHECKPOINTS)
    with small_disk(folder):
        run_cli(main, DQN_CLI + ["--steps", "8", "--run", out], prog="apps.rl")
        before = dqn.checkpoint_contents(out)
        break_disk(folder, fault)
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            run_cli(main, DQN_CLI + ["--steps", "16", "--run", out], prog="apps.rl")
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.strip() == (
            f"apps.rl: error: cannot write the checkpoint {folder}/step-000000000016: {REASONS[fault]}; "
            f"{folder}/step-000000000008 is kept")
        assert sorted(n for n in os.listdir(folder) if n != "filler") == ["step-000000000008"]
        after = dqn.checkpoint_contents(out)
        for key in before:
            np.testing.assert_array_equal(np.asarray(after[key]), np.asarray(before[key]), err_msg=key)


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_an_export_that_cannot_be_written_leaves_no_new_version(tmp_path, fault):
    keras.utils.set_random_seed(0)
    model = _tiny_model()
    sample = {"features": np.random.default_rng(0).normal(size=(4, 4)).astype(np.float32)}
    arguments = dict(input_names=["features"], output_names=["probabilities"], sample_inputs=sample,
                     kinds=("float",), log=lambda *a: None)
    app_dir = str(tmp_path / "models")
    with small_disk(app_dir, size="4m"):
        first = export.export_model(model, app_dir, **arguments)
        break_disk(app_dir, fault)
        with pytest.raises(UserError) as error:
            export.export_model(model, app_dir, **arguments)
        assert str(error.value) == (f"cannot write the export {app_dir}/2: {REASONS[fault]}; "
                                    f"the versions before it are untouched")
        # no version 2 (and no half-written one under another name) for a server to pick up
        assert sorted(n for n in os.listdir(app_dir) if n != "filler") == ["1", "tflite"]
        assert export.latest_version_dir(app_dir) == first["saved_model"]
        served = export.run_saved_model(first["saved_model"], sample)["probabilities"]
        np.testing.assert_allclose(served, first["saved_model_outputs"]["probabilities"])
