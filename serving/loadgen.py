"""A bounded load generator for TF-Serving-style servers, without TensorFlow.

    python -m serving.loadgen spec.json      # prints the result as JSON

It runs in its own process (a second Python, not sharing the server's GIL) and
starts in well under a second: REST goes over `http.client` keep-alive
connections, gRPC sends a pre-serialized `PredictRequest` as raw bytes on a
generic channel method and decodes the `PredictResponse` wire format itself
(model_spec.version and the output tensors), so neither needs the protos.

The spec (a dict, or a JSON file):

    rest_url, grpc_target        where to send (either may be absent)
    model                        REST path: /v1/models/<model>:predict
    rest_body                    the request body (JSON text)
    grpc_request                 base64 of a serialized PredictRequest
    rest_threads, grpc_threads   connections of each kind (each a thread)
    seconds, requests            stop at whichever comes first (both required)
    rate                         total requests/s to aim at (0: as fast as answers come)
    expected                     {version: outputs}: an answer must equal one of them (atol)
    records                      also return [monotonic start, protocol, version, ms, ok] per request

Every request counts as sent; it is a failure unless it got a 200 / OK whose
outputs equal a known version's (and, for gRPC, whose model_spec.version is
that version).
"""

import base64
import http.client
import json
import sys
import threading
import time
import urllib.parse

import numpy as np

PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"
_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 6: np.int8, 9: np.int64, 10: np.bool_}


# --- protobuf wire format (just what PredictResponse needs) -------------------------------------

def _varint(data, i):
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7


def _fields(data):
    """(field number, wire type, value) of a message: ints for varints, bytes otherwise."""
    i, n = 0, len(data)
    while i < n:
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 2:
            length, i = _varint(data, i)
            value, i = bytes(data[i:i + length]), i + length
        elif wire == 5:
            value, i = bytes(data[i:i + 4]), i + 4
        elif wire == 1:
            value, i = bytes(data[i:i + 8]), i + 8
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, wire, value


def _tensor(data):
    dtype, dims, content, floats = 0, [], None, []
    for number, wire, value in _fields(data):
        if number == 1:
            dtype = value
        elif number == 2:       # TensorShapeProto: repeated Dim dim = 2 { int64 size = 1 }
            for n, _, dim in _fields(value):
                if n == 2:
                    dims.append(next((v for k, _, v in _fields(dim) if k == 1), 0))
        elif number == 4:
            content = value
        elif number == 5:       # float_val, packed or not
            floats.extend(np.frombuffer(value, "<f4").tolist())
    numpy_dtype = np.dtype(_DTYPES.get(dtype, np.float32))
    if content is not None:
        return np.frombuffer(content, numpy_dtype).reshape(dims)
    array = np.asarray(floats, np.float32)
    return array.reshape(dims) if array.size == int(np.prod(dims)) else np.broadcast_to(array, dims)


def decode_predict_response(data):
    """(model_spec.version or None, {alias: ndarray}) of a serialized PredictResponse."""
    version, outputs = None, {}
    for number, _, value in _fields(data):
        if number == 1:        # map<string, TensorProto> outputs: entry {key = 1, value = 2}
            entry = {n: v for n, _, v in _fields(value)}
            outputs[entry.get(1, b"").decode()] = _tensor(entry.get(2, b""))
        elif number == 2:      # ModelSpec: google.protobuf.Int64Value version = 2 { int64 value = 1 }
            for n, _, v in _fields(value):
                if n == 2:
                    version = next((x for k, _, x in _fields(v) if k == 1), 0)
    return version, outputs


# --- the load -------------------------------------------------------------------------------------

class _Checker:
    def __init__(self, expected, atol):
        self.expected = {int(v): np.asarray(o, np.float64) for v, o in expected.items()}
        self.atol = atol

    def version_of(self, outputs):
        outputs = np.asarray(outputs, np.float64)
        for version, expected in self.expected.items():
            if outputs.shape == expected.shape and np.allclose(outputs, expected, atol=self.atol):
                return version
        return None


class _Rest:
    name = "REST"

    def __init__(self, spec, checker):
        parts = urllib.parse.urlsplit(spec["rest_url"])
        self.host, self.port = parts.hostname, parts.port
        self.path = f"/v1/models/{spec['model']}:predict"
        self.body = spec["rest_body"].encode()
        self.headers = {"Content-Type": "application/json"}
        self.checker, self.conn = checker, None

    def call(self):
        """(version, None) or (None, error text)."""
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            self.conn.request("POST", self.path, body=self.body, headers=self.headers)
            response = self.conn.getresponse()
            raw = response.read()
            if response.will_close:
                self.close()
        except (OSError, http.client.HTTPException) as error:
            self.close()
            return None, f"REST {type(error).__name__}: {error}"[:300]
        if response.status != 200:
            return None, f"REST {response.status}: {raw[:200].decode('utf-8', 'replace')}"
        payload = json.loads(raw)
        outputs = payload.get("outputs", payload.get("predictions"))
        version = self.checker.version_of(outputs)
        if version is None:
            return None, f"REST answer matches no complete version: {str(outputs)[:200]}"
        return version, None

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class _Grpc:
    name = "gRPC"

    def __init__(self, spec, checker, channel):
        self.method = channel.unary_unary(PREDICT_METHOD)
        self.request = base64.b64decode(spec["grpc_request"])
        self.checker = checker

    def call(self):
        import grpc

        try:
            data = self.method(self.request, timeout=30)
        except grpc.RpcError as error:
            return None, f"gRPC {error.code().name}: {error.details()}"[:300]
        version, outputs = decode_predict_response(data)
        if version not in self.checker.expected:
            return None, f"gRPC answer from version {version}, not a complete one"
        (alias, array), = outputs.items()
        if self.checker.version_of(array) != version:
            return None, f"gRPC answer of version {version} has other outputs: {array.tolist()}"[:300]
        return version, None

    def close(self):
        pass


def run(spec):
    """Drive the server as the spec says; a dict of figures (see the module docstring)."""
    checker = _Checker(spec.get("expected", {}), spec.get("atol", 1e-5))
    limit, seconds, rate = int(spec["requests"]), float(spec["seconds"]), float(spec.get("rate", 0))
    clients = []
    if spec.get("rest_url"):
        clients += [_Rest(spec, checker) for _ in range(int(spec.get("rest_threads", 2)))]
    channel = None
    if spec.get("grpc_target") and int(spec.get("grpc_threads", 0)):
        import grpc

        channel = grpc.insecure_channel(spec["grpc_target"])
        clients += [_Grpc(spec, checker, channel) for _ in range(int(spec["grpc_threads"]))]
    if not clients:
        raise ValueError("the spec names no REST url or gRPC target")
    lock = threading.Lock()
    state = {"issued": 0}
    latencies, failures, by_version, records = [], [], {}, []
    by_protocol = {c.name: {"sent": 0, "failed": 0} for c in clients}
    keep_records = bool(spec.get("records"))
    start = time.monotonic()
    deadline = start + seconds
    interval = len(clients) / rate if rate > 0 else 0.0

    def worker(client, offset):
        next_at = start + offset
        while True:
            now = time.monotonic()
            if now >= deadline:
                return
            with lock:
                if state["issued"] >= limit:
                    return
                state["issued"] += 1
            if interval:
                if next_at > now:
                    time.sleep(min(next_at - now, max(0.0, deadline - now)))
                next_at = max(next_at + interval, time.monotonic() - interval)
            began = time.monotonic()
            t0 = time.perf_counter()
            try:
                version, error = client.call()
            except Exception as exc:  # a malformed answer is a failure, not a crash of the generator
                version, error = None, f"{client.name} {type(exc).__name__}: {exc}"[:300]
            ms = (time.perf_counter() - t0) * 1e3
            with lock:
                by_protocol[client.name]["sent"] += 1
                if error is None:
                    latencies.append(ms)
                    by_version[version] = by_version.get(version, 0) + 1
                else:
                    by_protocol[client.name]["failed"] += 1
                    if len(failures) < 20:
                        failures.append(error)
                    failures_count[0] += 1
                if keep_records:
                    records.append([round(began, 4), client.name, version, round(ms, 3), error is None])

    failures_count = [0]
    threads = [threading.Thread(target=worker, args=(c, i * interval / max(1, len(clients))), daemon=True)
               for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    wall = time.monotonic() - start
    for client in clients:
        client.close()
    if channel is not None:
        channel.close()
    sent = sum(p["sent"] for p in by_protocol.values())
    lat = np.asarray(latencies) if latencies else np.zeros(1)
    result = {"sent": sent, "ok": len(latencies), "failed": failures_count[0], "failures": failures,
              "by_protocol": by_protocol, "by_version": {str(k): v for k, v in sorted(by_version.items())},
              "wall_s": round(wall, 3), "rate": round(sent / wall, 1) if wall > 0 else 0.0,
              "p50_ms": round(float(np.percentile(lat, 50)), 3), "p99_ms": round(float(np.percentile(lat, 99)), 3),
              "max_ms": round(float(lat.max()), 3), "start": start}
    if keep_records:
        result["records"] = sorted(records)
    return result


class Spawned:
    """`run(spec)` in a child process (`python -m serving.loadgen`); `.result()` waits for it."""

    def __init__(self, spec, python=None, cwd=None):
        import os
        import subprocess
        import tempfile

        root = cwd or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root
        handle, self.spec_path = tempfile.mkstemp(suffix=".json", prefix="loadgen-")
        with os.fdopen(handle, "w") as f:
            json.dump(spec, f)
        self.timeout = float(spec["seconds"]) + 90
        env = dict(os.environ, PYTHONPATH=root)
        self.process = subprocess.Popen([python or sys.executable, "-m", "serving.loadgen", self.spec_path],
                                        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)

    def result(self):
        import os

        try:
            out, err = self.process.communicate(timeout=self.timeout)
        except Exception:
            self.process.kill()
            self.process.communicate()
            raise
        finally:
            os.unlink(self.spec_path)
        if self.process.returncode != 0:
            raise RuntimeError(f"load generator exited {self.process.returncode}: {err[-2000:]}")
        return json.loads(out)


def percentile(values, q):
    return float(np.percentile(values, q)) if len(values) else float("nan")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m serving.loadgen SPEC.json", file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        spec = json.load(f)
    json.dump(run(spec), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
