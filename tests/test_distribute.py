"""Distributed training gives the same weights as one device.

Real strategies, real processes: MirroredStrategy over two logical CPU
devices, and MultiWorkerMirroredStrategy with two worker processes talking
gRPC over loopback, each compared to one-device training on the same data.
"""

import csv
import json

import numpy as np
import pytest

from conftest import free_ports, run_python
from core import distribute
from core.errors import UserError

SCRIPT = "tests/distributed_training.py"


def _weights(path):
    with np.load(path) as archive:
        return [archive[key] for key in sorted(archive.files, key=lambda k: int(k.split("_")[1]))]


@pytest.fixture(scope="module")
def single_device_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("single") / "weights.npz"
    result = run_python([SCRIPT, "--strategy", "default", "--weights", str(path)])
    assert result.returncode == 0, result.stderr[-2000:]
    return _weights(path)


def _assert_close(weights, reference):
    """Equal up to float64 summation order.

    The script trains in float64. In float32 the same 16 SGD steps turned
    reordered sums (~6e-8 relative each) into weight differences of up to
    2.3e-4, an amplification of ~4e3. The same amplification of float64's
    1.1e-16 is ~5e-13, so 1e-10 leaves a 200x margin and still catches any
    real difference (a wrong split of the batch or a missing all-reduce moves
    the weights by ~1e-3).
    """
    assert len(weights) == len(reference)
    for w, r in zip(weights, reference):
        assert w.dtype == np.float64
        np.testing.assert_allclose(w, r, atol=1e-10, rtol=0)


# slow: the next test makes the same comparison, at the same tolerance, through the classify app's own `train`
@pytest.mark.slow
def test_mirrored_on_two_logical_cpus_matches_one_device(tmp_path, single_device_weights):
    path = tmp_path / "weights.npz"
    result = run_python([SCRIPT, "--strategy", "mirrored", "--logical-cpus", "2", "--weights", str(path)])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "replicas=2" in result.stdout
    weights = _weights(path)
    _assert_close(weights, single_device_weights)
    # And training moved the weights at all (the comparison is not of two initial states).
    import keras

    from apps.classify.models import build_model

    keras.utils.set_random_seed(0)
    initial = build_model("lenet5", (28, 28, 1), 10).get_weights()
    assert max(np.abs(w - i).max() for w, i in zip(weights, initial)) > 1e-3


def _app_train(strategy, folder, *extra):
    """The classify app's real `train` (tests/distributed_training.py --app-run) into `folder`/run: the
    process's result and the trained weights."""
    result = run_python([SCRIPT, "--strategy", strategy, *extra, "--weights", str(folder / "weights.npz"),
                         "--app-run", str(folder / "run")], timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    return result, _weights(folder / "weights.npz")


def test_the_classify_apps_train_under_mirrored_on_two_logical_cpus_matches_one_device(tmp_path):
    """`python -m apps.classify train --strategy mirrored` on two logical CPUs (per-replica batch 32, global 64)
    ends with the weights of the same command on one device (batch 64), and the run's config.json records the
    strategy and the replicas.

    The app shuffles its training data (core.data.batched, seeded). Before the shuffle's order was made a
    function of (seed, epoch), the mirrored run saw its batches in another order (Keras 3's `fit` takes one
    extra pass to build the model under a strategy, which advanced the reshuffle seed): weights 3e-3 apart
    after one epoch. Now only the order of the sums differs: the script trains in float64 (see
    `_assert_close`: float32's ~6e-8 rounding per reordered sum grew to 2.3e-4 over 16 SGD steps, so float64's
    1.1e-16 grows to ~5e-13; measured 2.8e-17), and 1e-10 still fails on any other batch or order (~1e-3)."""
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    _, reference = _app_train("default", tmp_path / "one")
    result, weights = _app_train("mirrored", tmp_path / "two", "--logical-cpus", "2")
    assert "replicas=2 strategy=mirrored" in result.stdout  # read back from the run's config.json
    with open(tmp_path / "two" / "run" / "history.csv") as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    assert len(losses) == 2 and losses[1] < losses[0]
    _assert_close(weights, reference)


def test_two_process_multiworker_matches_one_device(tmp_path, single_device_weights):
    import subprocess
    import sys

    from conftest import ROOT

    ports = free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    workers = []
    for index in range(2):
        env = dict(__import__("os").environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2",
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        workers.append(subprocess.Popen(
            [sys.executable, SCRIPT, "--strategy", "multiworker", "--weights", str(tmp_path / f"w{index}.npz")],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    for worker in workers:
        try:
            outputs.append(worker.communicate(timeout=240))
        finally:
            worker.kill()
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
        assert "replicas=2" in out
    assert (tmp_path / "w0.npz").exists() and not (tmp_path / "w1.npz").exists()  # only the chief writes
    _assert_close(_weights(tmp_path / "w0.npz"), single_device_weights)


def test_strategy_errors_are_one_line(monkeypatch):
    with pytest.raises(UserError, match="unknown strategy 'tpu'"):
        distribute.get_strategy("tpu")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(UserError, match="needs TF_CONFIG"):
        distribute.get_strategy("multiworker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(UserError, match="TF_CONFIG is not valid JSON"):
        distribute.get_strategy("multiworker")


def test_default_strategy_and_batch_scaling():
    strategy = distribute.get_strategy("auto")  # no GPUs here: one device
    assert strategy.num_replicas_in_sync == 1
    assert distribute.global_batch_size(32, strategy) == 32
