"""Preemption: SIGTERM (a cluster scheduler, `docker stop`) makes a training run save a checkpoint
at the next step boundary and exit within seconds with one line and status 143 (128 + SIGTERM:
the job is unfinished, so a scheduler reruns it); the rerun resumes from that step, and no epoch
or step is logged twice. Keras apps (`core.training.fit`) and DQN, in real subprocesses."""

import csv
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import keras
import pytest

from conftest import ROOT, tiny_dataset
from core import training
from core.errors import EXIT_PREEMPTED, run_cli

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "preemptible_training.py")
EXIT_WITHIN_S = 10  # what docker stop waits before SIGKILL (the checkpoint is saved within ~0.2 s)


def csv_column(path, column):
    with open(path, newline="") as f:
        return [int(row[column]) for row in csv.DictReader(f)]


class Run:
    """A training subprocess whose stdout lines are read as they come (stderr goes to a file)."""

    def __init__(self, args, stderr_path):
        env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
        self.stderr_path = stderr_path
        with open(stderr_path, "w") as stderr:
            self.process = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                            stderr=stderr, text=True)
        self.lines, self.seen = queue.Queue(), []
        threading.Thread(target=lambda: [self.lines.put(line.rstrip("\n")) for line in self.process.stdout],
                         daemon=True).start()

    def wait_for(self, pattern, timeout=120):
        """The first stdout line matching `pattern` (a regex); fails if the run ends or the time is up."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            self.seen.append(line)
            if re.search(pattern, line):
                return line
        self.process.kill()
        self.process.wait()
        pytest.fail(f"no line matching {pattern!r}; last lines {self.seen[-5:]}; stderr {self.stderr()[-2000:]}")

    def terminate(self):
        """SIGTERM, then (exit status, seconds until it exited)."""
        sent = time.time()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
        return self.process.returncode, time.time() - sent

    def stderr(self):
        with open(self.stderr_path) as f:
            return f.read()


def test_sigterm_stops_a_keras_run_at_the_next_batch_and_the_rerun_resumes_there(tmp_path, capsys):
    import preemptible_training

    out = str(tmp_path / "run")
    run = Run([SCRIPT, "--out", out, "--epochs", "3", "--delay", "0.2"], str(tmp_path / "stderr.txt"))
    run.wait_for(r"^epoch 1 batch 2$")  # the second epoch is 3 batches in
    code, seconds = run.terminate()
    last_line = run.stderr().strip().splitlines()[-1]
    assert code == EXIT_PREEMPTED, run.stderr()[-2000:]
    assert seconds < EXIT_WITHIN_S
    done = re.fullmatch(r"preemptible: stopped by SIGTERM at epoch 2, batch (\d+); saved (\S+); "
                        r"rerun the same command to resume", last_line)
    assert done, last_line
    batches = int(done.group(1))
    assert 3 <= batches < preemptible_training.BATCHES  # at the next batch boundary, not at the epoch's end
    assert done.group(2) == os.path.join(out, "backup", f"epoch-000001-batch-{batches:06d}")
    assert csv_column(os.path.join(out, "history.csv"), "epoch") == [0]

    capsys.readouterr()
    preemptible_training.main(["--out", out, "--epochs", "3"])  # the same command, in this process
    printed = capsys.readouterr().out.splitlines()
    # The rest of epoch 2 (only the batches it had not trained on), then epoch 3: 8 optimizer steps
    # per epoch in all, none twice, none skipped.
    assert sum(line.startswith("epoch 1 batch") for line in printed) == preemptible_training.BATCHES - batches
    assert f"trained epochs [1, 2], optimizer step {3 * preemptible_training.BATCHES}" in printed
    assert csv_column(os.path.join(out, "history.csv"), "epoch") == [0, 1, 2]
    assert not os.path.exists(os.path.join(out, "backup"))


def test_sigterm_stops_a_dqn_run_at_the_next_step_and_the_rerun_resumes_there(tmp_path, capsys):
    from apps.rl import dqn
    from apps.rl.__main__ import main

    out = str(tmp_path / "run")
    command = ["dqn", "train", "--preset", "cartpole", "--steps", "1000000", "--num-envs", "2", "--buffer-size",
               "2000", "--learning-starts", "1000000", "--log-every", "100", "--checkpoint-every", "1000000",
               "--jit-compile", "off", "--strategy", "default", "--out", out]
    run = Run(["-m", "apps.rl", *command], str(tmp_path / "stderr.txt"))
    run.wait_for(r"^step +200 \|")
    code, seconds = run.terminate()
    last_line = run.stderr().strip().splitlines()[-1]
    assert code == EXIT_PREEMPTED, run.stderr()[-2000:]
    assert seconds < EXIT_WITHIN_S
    done = re.fullmatch(r"apps\.rl: stopped by SIGTERM at agent step (\d+); saved (\S+); "
                        r"rerun the same command to resume", last_line)
    assert done, last_line
    step = int(done.group(1))
    assert step > 200 and done.group(2) == os.path.join(out, dqn.CHECKPOINTS, f"step-{step:012d}")
    assert dqn.checkpoint_contents(out)["state/env_steps"] == step
    logged = csv_column(os.path.join(out, "train.csv"), "env_step")
    assert logged and max(logged) <= step

    capsys.readouterr()
    run_cli(main, command + ["--budget-steps", "300"], prog="apps.rl")  # the same command, for 300 more steps
    printed = capsys.readouterr().out
    assert f"resumed {out} at agent step {step} " in printed
    assert dqn.checkpoint_contents(out)["state/env_steps"] == step + 300
    rows = csv_column(os.path.join(out, "train.csv"), "env_step")
    assert rows == sorted(set(rows)) and rows[:len(logged)] == logged  # none twice, none lost
    assert rows[-1] > step


def test_sigterm_inside_fit_saves_the_batch_and_exits_143(tmp_path, capsys):
    """The same in one process (SIGTERM sent to itself at a known batch): the exact message, the
    previous backups kept, the handler put back afterwards."""
    run_dir = str(tmp_path / "run")
    backup = os.path.join(run_dir, "backup")

    class TerminateInSecondEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 1 and batch == 1:
                # without a handler, SIGTERM would end pytest itself
                assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN, None)
                os.kill(os.getpid(), signal.SIGTERM)

    def model():
        keras.utils.set_random_seed(0)
        tiny = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
        tiny.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
        return tiny

    handler_before = signal.getsignal(signal.SIGTERM)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda argv: training.fit(model(), tiny_dataset(0), tiny_dataset(1), epochs=3, run_dir=run_dir,
                                          extra_callbacks=[TerminateInSecondEpoch()]), [], prog="apps.test")
    assert exit_info.value.code == EXIT_PREEMPTED == 143
    assert capsys.readouterr().err.strip() == (
        f"apps.test: stopped by SIGTERM at epoch 2, batch 2; saved {backup}/epoch-000001-batch-000002; "
        f"rerun the same command to resume")
    assert signal.getsignal(signal.SIGTERM) == handler_before
    assert sorted(os.listdir(backup)) == ["epoch-000001-batch-000000", "epoch-000001-batch-000002"]
    assert csv_column(os.path.join(run_dir, "history.csv"), "epoch") == [0]

    resumed = model()
    history = training.fit(resumed, tiny_dataset(0), tiny_dataset(1), epochs=3, run_dir=run_dir)
    assert history.epoch == [1, 2]
    assert int(resumed.optimizer.iterations.numpy()) == 3 * 4  # 3 epochs of 4 batches, none twice
    assert csv_column(os.path.join(run_dir, "history.csv"), "epoch") == [0, 1, 2]
