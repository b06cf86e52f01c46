"""Preemption: SIGTERM (a cluster scheduler, `docker stop`) makes a training run save a checkpoint
at the next step boundary and exit within seconds with one line and status 143 (128 + SIGTERM:
the job is unfinished, so a scheduler reruns it); the rerun resumes from that step, and no epoch
or step is logged twice. Keras apps (`core.training.fit`) and DQN, in real subprocesses; and
`fit` under MultiWorkerMirroredStrategy, two worker processes over loopback gRPC, where a SIGTERM to
one worker stops both at the same batch."""

import csv
import json
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

from conftest import ROOT, free_ports, tiny_dataset
from core import training
from core.errors import EXIT_PREEMPTED, run_cli

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "preemptible_training.py")
EXIT_WITHIN_S = 10  # what docker stop waits before SIGKILL (the checkpoint is saved within ~0.2 s)


def csv_column(path, column):
    with open(path, newline="") as f:
        return [int(row[column]) for row in csv.DictReader(f)]


class Run:
    """A training subprocess whose stdout lines are read as they come (stderr goes to a file)."""

    def __init__(self, args, stderr_path, env=None):
        env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1", **(env or {}))
        self.stderr_path = stderr_path
        with open(stderr_path, "w") as stderr:
            self.process = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                            stderr=stderr, text=True)
        self.lines, self.seen = queue.Queue(), []
        self.reader = threading.Thread(
            target=lambda: [self.lines.put(line.rstrip("\n")) for line in self.process.stdout], daemon=True)
        self.reader.start()

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
        return self.wait(30), time.time() - sent

    def wait(self, timeout):
        """The exit status (killed, and a failure, after `timeout` seconds)."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"still running after {timeout} s; last lines {self.seen[-5:]}; "
                        f"stderr {self.stderr()[-2000:]}")
        return self.process.returncode

    def rest(self, timeout):
        """Every stdout line, once the process has ended (within `timeout` seconds)."""
        self.wait(timeout)
        self.reader.join(timeout=10)  # it ends with the process's stdout
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return self.seen

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
    command = ["train", "--task", "dqn", "--preset", "cartpole", "--steps", "1000000", "--num-envs", "2",
               "--buffer-size", "2000", "--learning-starts", "1000000", "--log-every", "100",
               "--checkpoint-every", "1000000", "--no-jit", "--strategy", "default", "--run", out]
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


def _workers(out, tmp_path, name, delay):
    """The two workers of a MultiWorkerMirroredStrategy run over loopback gRPC (worker 0: the chief)."""
    cluster = {"worker": [f"localhost:{port}" for port in free_ports(2)]}
    return [Run([SCRIPT, "--out", out, "--epochs", "3", "--delay", str(delay), "--strategy", "multiworker"],
                str(tmp_path / f"{name}{index}.txt"),
                env={"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})})
            for index in range(2)]


# TensorFlow's multi-worker runtime takes ~5 s to shut down after the last line (gRPC server and
# coordination service, in C++), on top of the save: longer than one process's exit.
MULTI_WORKER_EXIT_WITHIN_S = 30


def test_sigterm_to_one_worker_stops_both_at_the_same_batch_and_the_rerun_resumes_there(tmp_path):
    """Multi-worker: a SIGTERM to the non-chief alone stops both workers at the same batch (each
    worker's SIGTERM flag is all-reduced at every batch end; one that went on would wait forever in
    the next step's all-reduce), the chief saves that batch, both exit 143; rerun, both resume there."""
    import preemptible_training

    out = str(tmp_path / "run")
    workers = _workers(out, tmp_path, "stderr", delay=0.5)
    try:
        workers[1].wait_for(r"^epoch 1 batch 2$", timeout=240)  # the second epoch is 3 batches in
        code, seconds = workers[1].terminate()
        codes = [workers[0].wait(MULTI_WORKER_EXIT_WITHIN_S), code]
    finally:
        for worker in workers:
            worker.process.kill()
    last_lines = [worker.stderr().strip().splitlines()[-1] for worker in workers]
    assert codes == [EXIT_PREEMPTED] * 2, [worker.stderr()[-2000:] for worker in workers]
    assert seconds < MULTI_WORKER_EXIT_WITHIN_S
    stops = [re.fullmatch(r"preemptible: stopped by SIGTERM( to another worker)? at epoch 2, batch (\d+); "
                          r"saved (\S+); rerun the same command to resume", line) for line in last_lines]
    assert all(stops), last_lines
    assert [bool(stop.group(1)) for stop in stops] == [True, False]  # the chief stopped for the other worker
    batches = {int(stop.group(2)) for stop in stops}
    assert len(batches) == 1, last_lines  # the same batch
    batches = batches.pop()
    assert 3 <= batches < preemptible_training.BATCHES  # at a batch boundary, not at the epoch's end
    saved = os.path.join(out, "backup", f"epoch-000001-batch-{batches:06d}")
    assert {stop.group(3) for stop in stops} == {saved} and os.path.isdir(saved)  # the chief's
    assert csv_column(os.path.join(out, "history.csv"), "epoch") == [0]

    workers = _workers(out, tmp_path, "rerun", delay=0)
    try:
        printed = [worker.rest(timeout=240) for worker in workers]
        codes = [worker.process.returncode for worker in workers]
    finally:
        for worker in workers:
            worker.process.kill()
    assert codes == [0, 0], [worker.stderr()[-2000:] for worker in workers]
    for lines in printed:  # each resumed at that batch: 8 optimizer steps per epoch, none twice, none skipped
        assert sum(line.startswith("epoch 1 batch") for line in lines) == preemptible_training.BATCHES - batches
        assert f"trained epochs [1, 2], optimizer step {3 * preemptible_training.BATCHES}" in lines
    assert csv_column(os.path.join(out, "history.csv"), "epoch") == [0, 1, 2]
    assert not os.path.exists(os.path.join(out, "backup"))
