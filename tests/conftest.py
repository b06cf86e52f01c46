"""Shared fixtures. Tests use real data, real TensorFlow and real files."""

import atexit
import functools
import os
import shutil
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(args, env=None, timeout=300, **kwargs):
    """Run `python args...` from the repo root, as a user would; returns CompletedProcess."""
    full_env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=timeout, **kwargs)


@functools.cache
def lenet5_fashion_run():
    """A LeNet-5 run folder of apps.classify, trained briefly on 3,000 real Fashion-MNIST images: trained once
    per pytest worker, for the classify, visualize, transfer and GAN-judge tests alike."""
    from apps.classify import app

    root = tempfile.mkdtemp(prefix="lenet5-fashion-")
    atexit.register(shutil.rmtree, root, True)
    run_dir = os.path.join(root, "lenet5")
    app.train(model="lenet5", dataset="fashion_mnist", epochs=3, batch_size=64, run=run_dir, limit=3000)
    return run_dir


@pytest.fixture(scope="session")
def trained_run():
    """`lenet5_fashion_run()` as a fixture."""
    return lenet5_fashion_run()


def free_ports(n):
    """`n` loopback ports free right now (for a multi-worker cluster spec)."""
    import socket

    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def tiny_dataset(seed):
    """64 points of 4 features in 3 classes, batches of 16: for tests of the training plumbing."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 1).astype("int32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
