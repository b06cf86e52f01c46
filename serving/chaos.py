"""Serving under change: scenarios shared by the tests and `make serve-chaos`.

Each drives a real server (in-process threads or its own process; anything
with `.url`, `.target`, `.config_path` and `.rss()`) over loopback only, with
requests bounded in count and time, and returns figures; the callers assert
on them (tests) or print them (bench/serving_load.py --chaos).

- `hot_swap`: under load from a second process, a new version folder is renamed
  into place, a broken version appears, and models.config changes the policy
  (rolls back to version 1). Figures: requests, failures, answers by version,
  p99 inside the swap windows, answers from a version after it was replaced.
- `slow_clients`: 100 connections send headers and half a body, then stall,
  while a client keeps sending real requests.
- `soak`: N requests, the server's RSS before and after.
"""

import base64
import json
import os
import shutil
import socket
import time
import urllib.request

import numpy as np

FEATURES, CLASSES = 4, 3


# --- tiny models ---------------------------------------------------------------------------------

def tiny_weights(seed):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(FEATURES, CLASSES)).astype(np.float32), rng.normal(size=CLASSES).astype(np.float32)


def tiny_outputs(seed, x):
    """What the tiny model of `seed` answers for `x` (NumPy, float64)."""
    w, b = tiny_weights(seed)
    logits = np.asarray(x, np.float64) @ w.astype(np.float64) + b
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def export_tiny(model_dir, version, seed=None, *, place=True):
    """A softmax(x W + b) SavedModel (input `x` [?,4] float32, output `probabilities` [?,3]) written
    to a hidden folder and renamed to `<model_dir>/<version>` whole (unless place=False: then the
    hidden folder is returned, for the caller to rename when it wants)."""
    import tensorflow as tf

    w, b = tiny_weights(version if seed is None else seed)

    class Tiny(tf.Module):
        def __init__(self):
            super().__init__()
            self.w, self.b = tf.Variable(w), tf.Variable(b)

        @tf.function(input_signature=[tf.TensorSpec([None, FEATURES], tf.float32, name="x")])
        def serve(self, x):
            return {"probabilities": tf.nn.softmax(tf.matmul(x, self.w) + self.b)}

    module = Tiny()
    os.makedirs(model_dir, exist_ok=True)
    staging = os.path.join(model_dir, f".staging-{version}-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    tf.saved_model.save(module, staging, signatures={"serving_default": module.serve})
    if not place:
        return staging
    final = os.path.join(model_dir, str(version))
    os.replace(staging, final)
    return final


def export_slow(model_dir, version=1):
    """A model that spins for `seconds` (an input) before answering `x * 2`: a request that is
    surely in flight when the server is told to stop."""
    import tensorflow as tf

    class Slow(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, FEATURES], tf.float32, name="x"),
                                      tf.TensorSpec([], tf.float32, name="seconds")])
        def serve(self, x, seconds):
            end = tf.timestamp() + tf.cast(seconds, tf.float64)
            (spins,) = tf.while_loop(lambda i: tf.timestamp() < end, lambda i: (i + 1,), (tf.constant(0),))
            return {"y": x * 2.0 + tf.cast(spins * 0, tf.float32)}

    module = Slow()
    staging = os.path.join(model_dir, f".staging-{version}")
    tf.saved_model.save(module, staging, signatures={"serving_default": module.serve})
    os.replace(staging, os.path.join(model_dir, str(version)))


def write_config(config_path, models):
    """models.config for {name: policy} ("latest", "latest:2", "all", "specific:1,2"), every
    model's folder being <config dir>/<name>; written whole (renamed into place)."""
    from serving import config as config_lib

    policies = dict(models)
    return config_lib.write_config(config_path, config_lib.build_config(list(models), policies=policies))


def set_policy(config_path, model, policy):
    """Rewrite models.config (whole, renamed into place) with `model`'s version policy changed."""
    from serving import config as config_lib

    with open(config_path) as f:
        config = config_lib.parse_config(f.read())
    changed = config_lib.build_config([model], policies={model: policy}).model_config_list.config[0]
    for entry in config.model_config_list.config:
        if entry.name == model:
            entry.model_version_policy.CopyFrom(changed.model_version_policy)
    return config_lib.write_config(config_path, config)


def request_payloads(model, x):
    """(REST body text, base64 of a gRPC PredictRequest) asking `model` for `x`."""
    from tensorflow_serving.apis import predict_pb2

    from serving.protos import array_to_tensor_proto

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["x"].CopyFrom(array_to_tensor_proto(np.asarray(x, np.float32)))
    body = json.dumps({"inputs": {"x": np.asarray(x, np.float32).tolist()}})
    return body, base64.b64encode(request.SerializeToString()).decode()


# --- helpers -------------------------------------------------------------------------------------

def rss_mib(pid=None):
    """Resident set size of a process (default this one), MiB, from /proc (Linux)."""
    with open(f"/proc/{pid or 'self'}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise OSError("no VmRSS in /proc status")


def versions(url, model):
    """{version: state} the server reports for `model`."""
    try:
        with urllib.request.urlopen(f"{url}/v1/models/{model}", timeout=5) as response:
            status = json.loads(response.read())["model_version_status"]
    except (OSError, ValueError):
        return {}
    return {int(s["version"]): s["state"] for s in status}


def predictions_served(url, model):
    """How many predict calls the server has answered OK for `model` (from its Prometheus metrics)."""
    from serving.metrics import parse

    try:
        with urllib.request.urlopen(f"{url}/monitoring/prometheus/metrics", timeout=5) as response:
            samples, _ = parse(response.read().decode())
    except (OSError, ValueError):
        return 0
    return sum(v for (name, labels), v in samples.items() if name == ":tensorflow:serving:request_count"
               and ("model_name", model) in labels and ("API", "predict") in labels and ("status", "OK") in labels)


def wait_until(predicate, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


# --- scenarios -----------------------------------------------------------------------------------

def hot_swap(server, model="tiny", *, seconds=10.0, rate=400, rest_threads=3, grpc_threads=3, lead=1.5,
             max_requests=20000, x=None):
    """Under load, v2 appears, a broken v3 appears, then models.config pins version 1.

    The model folder must hold version 1 only, served with `latest`. Returns figures; the
    server must end serving version 1 only."""
    from serving import loadgen

    root = os.path.dirname(os.path.abspath(server.config_path))
    model_dir = os.path.join(root, model)
    x = np.asarray(x if x is not None else np.random.default_rng(7).normal(size=(2, FEATURES)), np.float32)
    staging = export_tiny(model_dir, 2, place=False)          # exported before the clock starts
    broken = os.path.join(model_dir, ".staging-3")
    os.makedirs(os.path.join(broken, "variables"), exist_ok=True)
    with open(os.path.join(broken, "saved_model.pb"), "wb") as f:
        f.write(b"this is not a SavedModel")
    body, grpc_request = request_payloads(model, x)
    expected = {1: tiny_outputs(1, x).tolist(), 2: tiny_outputs(2, x).tolist()}
    spec = {"rest_url": server.url, "grpc_target": server.target, "model": model, "rest_body": body,
            "grpc_request": grpc_request, "rest_threads": rest_threads, "grpc_threads": grpc_threads,
            "seconds": seconds, "requests": max_requests, "rate": rate, "expected": expected, "records": True}
    events = {}
    generator = loadgen.Spawned(spec)
    try:
        if versions(server.url, model) != {1: "AVAILABLE"}:
            raise RuntimeError(f"{model} must serve version 1 only, serves {versions(server.url, model)}")
        # the changes start `lead` seconds into the load, spaced out
        served = predictions_served(server.url, model)
        if not wait_until(lambda: predictions_served(server.url, model) > served, 30, 0.02):
            raise RuntimeError("the load generator sent nothing in 30 s")
        time.sleep(lead)
        events["v2_placed"] = time.monotonic()
        os.replace(staging, os.path.join(model_dir, "2"))
        wait_until(lambda: versions(server.url, model).get(2) == "AVAILABLE", 30)
        events["v2_serving"] = time.monotonic()
        time.sleep(0.5)
        events["v3_placed"] = time.monotonic()
        os.replace(broken, os.path.join(model_dir, "3"))
        wait_until(lambda: versions(server.url, model).get(3) == "END", 30)
        events["v3_failed"] = time.monotonic()
        after_broken = versions(server.url, model)            # {version: state} once v3 has failed
        time.sleep(0.5)
        events["config_written"] = time.monotonic()
        set_policy(server.config_path, model, "specific:1")
        wait_until(lambda: versions(server.url, model).get(1) == "AVAILABLE"
                   and versions(server.url, model).get(2) == "END", 30)
        events["v1_serving_again"] = time.monotonic()
    finally:
        result = generator.result()
    records = result.pop("records")
    windows = [(events["v2_placed"], events["v2_serving"] + 0.5),
               (events["config_written"], events.get("v1_serving_again", events["config_written"]) + 0.5)]
    in_swap = [r for r in records if any(a <= r[0] <= b for a, b in windows)]
    swap_ms = [r[3] for r in in_swap if r[4]]
    # answers from a version that had already been replaced when the request was sent
    stale = [r for r in records if r[4] and (
        (r[2] == 1 and events["v2_serving"] + 0.05 < r[0] < events["config_written"]) or
        (r[2] == 2 and r[0] > events["v1_serving_again"] + 0.05))]
    result.update({
        "events": {k: round(v - result["start"], 3) for k, v in events.items()},
        "swap_requests": len(in_swap), "swap_failed": sum(1 for r in in_swap if not r[4]),
        "swap_p99_ms": round(float(np.percentile(swap_ms, 99)), 3) if swap_ms else None,
        "stale_answers": len(stale),
        "after_broken_version": after_broken,
        "final_versions": versions(server.url, model),
    })
    return result


def _stalled_connection(host, port, path, body):
    """A client that sends the headers and half the body, then nothing."""
    sock = socket.create_connection((host, port), timeout=30)
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    try:
        sock.sendall(head + body[: len(body) // 2])
    except OSError:
        pass
    return sock


def slow_clients(server, model="tiny", *, stalled=100, spacing=0.003, seconds=None, settle=0.1, x=None):
    """`stalled` connections, opened one after another (`spacing` s apart, so that each is seen
    before the next: a server that counts connections against a limit fills up), each send
    headers + half a body and stall, while one client sends real requests (a new connection each
    time, the costlier case) for `seconds` (default: until the server has closed every stalled
    connection, at most 60 s). The first real request goes `settle` seconds after the last
    stalled connection opened: the server tells a stalled client from a slow one by 50 ms without
    a byte. Returns figures."""
    import urllib.parse

    parts = urllib.parse.urlsplit(server.url)
    host, port = parts.hostname, parts.port
    x = np.asarray(x if x is not None else np.ones((1, FEATURES)), np.float32)
    body = json.dumps({"inputs": {"x": x.tolist()}}).encode()
    path = f"/v1/models/{model}:predict"
    started = time.monotonic()
    sockets = []
    for _ in range(stalled):
        sockets.append(_stalled_connection(host, port, path, body))
        time.sleep(spacing)
    opened = time.monotonic() - started
    for s in sockets:
        s.setblocking(False)
    time.sleep(settle)
    closed_at, answers = {}, {}
    good = {"sent": 0, "ok": 0, "statuses": {}, "latencies": []}
    limit = time.monotonic() + (seconds or 60)
    while time.monotonic() < limit:
        t0 = time.perf_counter()
        try:
            conn = urllib.request.urlopen(urllib.request.Request(
                server.url + path, data=body, headers={"Content-Type": "application/json"}), timeout=30)
            status = conn.status
            conn.read()
            conn.close()
        except urllib.error.HTTPError as error:
            status = error.code
            good.setdefault("first_error", f"{error.code} at {time.monotonic() - started:.3f} s: "
                                           f"{error.read()[:200]!r}")
        except OSError as error:
            status = type(error).__name__
            good.setdefault("first_error", f"{error!r} at {time.monotonic() - started:.3f} s")
        good["latencies"].append((time.perf_counter() - t0) * 1e3)
        good["sent"] += 1
        good["ok"] += status == 200
        good["statuses"][str(status)] = good["statuses"].get(str(status), 0) + 1
        for i, s in enumerate(sockets):   # which stalled connections has the server closed?
            if i in closed_at:
                continue
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                answers[i] = answers.get(i, b"") + data
            if not data or data.endswith(b"}"):
                closed_at[i] = time.monotonic() - started
        if seconds is None and len(closed_at) == stalled:
            break
        time.sleep(0.01)
    for s in sockets:
        s.close()
    codes = {}
    for i in closed_at:
        line = answers.get(i, b"").split(b"\r\n", 1)[0].decode("latin-1")
        code = line.split(" ")[1] if line.startswith("HTTP/") else "closed"
        codes[code] = codes.get(code, 0) + 1
    latencies = np.asarray(good["latencies"] or [0.0])
    return {"stalled": stalled, "opened_s": round(opened, 3), "stalled_closed": len(closed_at),
            "stalled_answers": codes,
            "stalled_closed_by_s": round(max(closed_at.values()), 3) if closed_at else None,
            "good_sent": good["sent"], "good_ok": good["ok"], "good_statuses": good["statuses"],
            "good_first_error": good.get("first_error"),
            "good_p99_ms": round(float(np.percentile(latencies, 99)), 3),
            "good_max_ms": round(float(latencies.max()), 3)}


def soak(server, model="tiny", *, requests=100_000, warmup=2_000, rest_threads=2, grpc_threads=2,
         seconds=900, x=None, rss=None):
    """`requests` requests (REST and gRPC) after `warmup` ones; RSS of the server before/after."""
    from serving import loadgen

    x = np.asarray(x if x is not None else np.random.default_rng(3).normal(size=(1, FEATURES)), np.float32)
    body, grpc_request = request_payloads(model, x)
    served = {str(v): tiny_outputs(v, x).tolist() for v, s in versions(server.url, model).items()
              if s == "AVAILABLE"}
    spec = {"rest_url": server.url, "grpc_target": server.target, "model": model, "rest_body": body,
            "grpc_request": grpc_request, "rest_threads": rest_threads, "grpc_threads": grpc_threads,
            "expected": served}
    rss = rss or server.rss
    loadgen.Spawned(dict(spec, seconds=min(seconds, 120), requests=warmup)).result()
    before = rss()
    result = loadgen.Spawned(dict(spec, seconds=seconds, requests=requests)).result()
    after = rss()
    return {"requests": result["sent"], "failed": result["failed"], "failures": result["failures"][:3],
            "rate": result["rate"], "p99_ms": result["p99_ms"], "rss_start_mib": round(before, 1),
            "rss_end_mib": round(after, 1), "rss_growth_mib": round(after - before, 1)}


def in_flight(url):
    """{entrypoint: requests in flight} from the server's metrics."""
    from serving.metrics import parse

    with urllib.request.urlopen(f"{url}/monitoring/prometheus/metrics", timeout=5) as response:
        samples, _ = parse(response.read().decode())
    return {dict(labels)["entrypoint"]: value for (name, labels), value in samples.items()
            if name == "local_serving_in_flight_requests"}


def drain(server, stop, model="tiny", slow_model="slow", spin=2.0):
    """With a REST request half sent and a gRPC call to `slow_model` spinning `spin` seconds,
    `stop()` (SIGTERM); then the REST port must refuse connections, a new gRPC call must be
    refused, and both requests in flight must be answered in full. Returns figures."""
    import http.client
    import urllib.parse

    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from serving.protos import array_to_tensor_proto

    x = np.arange(2 * FEATURES, dtype=np.float32).reshape(2, FEATURES)
    body = json.dumps({"inputs": {"x": x.tolist()}}).encode()
    half = len(body) // 2
    parts = urllib.parse.urlsplit(server.url)
    rest = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    rest.putrequest("POST", f"/v1/models/{model}:predict")
    rest.putheader("Content-Type", "application/json")
    rest.putheader("Content-Length", str(len(body)))
    rest.endheaders(body[:half])

    channel = grpc.insecure_channel(server.target)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = slow_model
    request.inputs["x"].CopyFrom(array_to_tensor_proto(x))
    request.inputs["seconds"].CopyFrom(array_to_tensor_proto(np.float32(spin)))
    slow_call = stub.Predict.future(request, timeout=30)
    figures = {"in_flight": wait_until(lambda: in_flight(server.url).get("REST", 0) >= 1
                                       and in_flight(server.url).get("GRPC", 0) >= 1, 15)}
    stop()
    signalled = time.monotonic()

    def refused():
        try:
            socket.create_connection((parts.hostname, parts.port), timeout=1).close()
            return False
        except ConnectionRefusedError:
            return True
    figures["rest_refused"] = wait_until(refused, 5, 0.02)
    figures["refused_after_s"] = round(time.monotonic() - signalled, 3)
    try:
        stub.Predict(request, timeout=5)
        figures["new_grpc_call"] = "OK"
    except grpc.RpcError as error:
        figures["new_grpc_call"] = error.code().name

    rest.send(body[half:])                    # the second half, after the signal
    response = rest.getresponse()
    answer = json.loads(response.read())
    rest.close()
    figures["rest_status"] = response.status
    figures["rest_answer_ok"] = response.status == 200 and np.allclose(answer["outputs"], tiny_outputs(1, x),
                                                                        atol=1e-5)
    try:
        reply = slow_call.result(timeout=30)
        (_, tensor), = reply.outputs.items()
        from serving.loadgen import _tensor
        figures["grpc_status"] = "OK"
        figures["grpc_answer_ok"] = np.allclose(_tensor(tensor.SerializeToString()), x * 2)
    except grpc.RpcError as error:
        figures["grpc_status"], figures["grpc_answer_ok"] = error.code().name, False
    figures["answered_after_s"] = round(time.monotonic() - signalled, 3)
    channel.close()
    return figures
