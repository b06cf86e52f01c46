"""Helpers for the serving tests (no tests here): tiny exported classifiers and a
real local server in a subprocess on free loopback ports."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = [f"class{i}" for i in range(10)]


def tiny_classifier(seed):
    """An untrained LeNet-5 with seeded weights (serving needs no training)."""
    import keras

    from apps.classify.models import build_model

    keras.utils.set_random_seed(seed)
    return build_model("lenet5", (28, 28, 1), 10)


def export_version(model, app_dir, version):
    """Write `model` as <app_dir>/<version>/ whole (renamed into place, as core.export does)."""
    from core import export

    tmp = os.path.join(app_dir, f".tmp-{version}")
    export.export_saved_model(model, tmp, ["images"], ["probabilities"])
    os.makedirs(os.path.join(tmp, "assets.extra"), exist_ok=True)
    with open(os.path.join(tmp, "assets.extra", "labels.txt"), "w") as f:
        f.write("\n".join(CLASSES) + "\n")
    os.replace(tmp, os.path.join(app_dir, str(version)))


def images(n, seed=0):
    return np.random.RandomState(seed).uniform(0, 255, (n, 28, 28, 1)).astype(np.float32)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Queries:
    def versions(self, model):
        """Versions the server reports AVAILABLE for `model` ([] when none or not up)."""
        try:
            with urllib.request.urlopen(f"{self.url}/v1/models/{model}", timeout=5) as response:
                status = json.loads(response.read())["model_version_status"]
        except (OSError, ValueError):
            return []
        return sorted(int(s["version"]) for s in status if s["state"] == "AVAILABLE")

    def wait_ready(self, models, count=None, timeout=120):
        """Until every model has its versions loaded (count: model -> how many)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"server stopped:\n{self.log()}")
            if all(len(self.versions(m)) >= (count or {}).get(m, 1) for m in models):
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server not ready in {timeout}s:\n{self.log()}")


class InProcessServer(_Queries):
    """The real server (uvicorn + grpcio on loopback sockets) in threads of this
    process: the test worker has TensorFlow loaded already, a subprocess would
    pay for it again."""

    def __init__(self, config_path, *, poll_seconds=0.3, **kwargs):
        from serving.server import ThreadedServer

        self.root = os.path.dirname(config_path)
        self.config_path = config_path
        self._lines = []
        for attempt in range(3):  # a free port can be taken between the probe and the bind
            self.rest_port, self.grpc_port = free_port(), free_port()
            try:
                self.server = ThreadedServer(config_path, rest_port=self.rest_port, grpc_port=self.grpc_port,
                                             poll_seconds=poll_seconds, log=self._lines.append, **kwargs)
                break
            except OSError:
                if attempt == 2:
                    raise
        self.url = f"http://127.0.0.1:{self.rest_port}"
        self.target = f"127.0.0.1:{self.grpc_port}"

    def log(self):
        return "\n".join(self._lines[-40:])

    def alive(self):
        return self.server.alive()

    def rss(self):
        from serving.chaos import rss_mib
        return rss_mib()

    def stop(self):
        self.server.stop()


class LocalServer(_Queries):
    """`python -m serving serve` on free ports; stopped by `stop()`."""

    def __init__(self, config_path, wait_model, *extra, timeout=120):
        self.root = os.path.dirname(config_path)
        self.config_path = config_path
        self.rest_port, self.grpc_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.rest_port}"
        self.target = f"127.0.0.1:{self.grpc_port}"
        self.log_path = config_path + f".{self.rest_port}.log"
        self._log = open(self.log_path, "w")
        env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "serving", "serve", "--config", config_path,
             "--rest-port", str(self.rest_port), "--grpc-port", str(self.grpc_port), *extra],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        if wait_model:
            self.wait_ready([wait_model], timeout=timeout)

    def log(self):
        with open(self.log_path) as f:
            return f.read()[-3000:]

    def alive(self):
        return self.process.poll() is None

    def rss(self):
        from serving.chaos import rss_mib
        return rss_mib(self.process.pid)

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def wait_for(predicate, timeout=30, interval=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()
