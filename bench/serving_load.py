"""Load figures for the local TF-Serving-compatible server: requests/s, p50 and p99.

    python bench/serving_load.py                       # tiny LeNet-5 export in a temp folder
    python bench/serving_load.py --config saved_models/models.config --model classify

Starts `python -m core.serving serve` as its own process on free loopback
ports, then drives it from this (second) process with `--concurrency`
threads, for REST and for gRPC in turn, each bounded by `--requests` and
`--max-seconds`. Every answer is checked against the first one.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_export(folder):
    import keras

    from apps.classify.models import build_model
    from core import export
    from core.serving import config as config_lib

    keras.utils.set_random_seed(0)
    model = build_model("lenet5", (28, 28, 1), 10)
    export.export_saved_model(model, os.path.join(folder, "classify", "1"), ["images"], ["probabilities"])
    return config_lib.write_config(os.path.join(folder, "models.config"), config_lib.build_config(["classify"]))


def start_server(config, rest_port, grpc_port, model, concurrency):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    process = subprocess.Popen([sys.executable, "-m", "core.serving", "serve", "--config", config,
                                "--rest-port", str(rest_port), "--grpc-port", str(grpc_port),
                                "--max-concurrency", str(concurrency)],
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{rest_port}/v1/models/{model}", timeout=2):
                return process
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit("server did not come up in 180 s")


def drive(make_call, requests, concurrency, max_seconds, reference):
    """Run `requests` calls over `concurrency` threads; latencies in ms and wall time."""
    latencies, errors, lock = [], [], threading.Lock()
    counter = iter(range(requests))
    deadline = time.monotonic() + max_seconds + 30  # + the warm-up call of each thread

    def worker():
        call = make_call()
        call()  # this thread's connection is open and warm before the clock counts
        barrier.wait()
        while time.monotonic() < deadline:
            with lock:
                if next(counter, None) is None:
                    return
            start = time.perf_counter()
            try:
                output = call()
                ok = np.allclose(output, reference, atol=1e-5)
            except Exception as error:  # count it and go on: this is a load test
                ok, output = False, error
            elapsed = (time.perf_counter() - start) * 1e3
            with lock:
                (latencies if ok else errors).append(elapsed if ok else repr(output)[:200])

    barrier = threading.Barrier(concurrency + 1)
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return np.asarray(latencies), errors, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="models.config to serve (default: a tiny export in a temp folder)")
    parser.add_argument("--model", default="classify")
    parser.add_argument("--requests", type=int, default=500, help="per protocol")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1, help="examples per request")
    parser.add_argument("--max-seconds", type=float, default=60, help="per protocol")
    args = parser.parse_args()

    from core.serving.client import GrpcClient, RestClient

    with tempfile.TemporaryDirectory() as folder:
        config = args.config or tiny_export(folder)
        rest_port, grpc_port = free_port(), free_port()
        server = start_server(config, rest_port, grpc_port, args.model, args.concurrency)
        try:
            url, target = f"http://127.0.0.1:{rest_port}", f"127.0.0.1:{grpc_port}"
            signature = RestClient(url).signature(args.model)
            (alias, (_, shape)), = signature["inputs"].items()
            x = np.random.default_rng(0).uniform(0, 255, [args.batch] + shape[1:]).astype(np.float32)
            reference = next(iter(RestClient(url).predict(args.model, {alias: x}).values()))
            grpc_client = GrpcClient(target)

            def rest_call():
                client = RestClient(url)
                return lambda: next(iter(client.predict(args.model, {alias: x}).values()))

            def grpc_call():
                return lambda: next(iter(grpc_client.predict(args.model, {alias: x}).values()))

            results = {}
            for name, make_call in (("REST", rest_call), ("gRPC", grpc_call)):
                drive(make_call, 20, args.concurrency, 30, reference)  # warm-up
                latencies, errors, wall = drive(make_call, args.requests, args.concurrency, args.max_seconds,
                                                reference)
                results[name] = {"requests": int(len(latencies)), "errors": len(errors),
                                 "requests_per_s": len(latencies) / wall,
                                 "p50_ms": float(np.percentile(latencies, 50)) if len(latencies) else None,
                                 "p99_ms": float(np.percentile(latencies, 99)) if len(latencies) else None}
                if errors:
                    print(f"{name}: first error: {errors[0]}", file=sys.stderr)
            grpc_client.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"model {args.model}, batch {args.batch}, {args.concurrency} concurrent clients, "
          f"{os.cpu_count()} CPU cores shared by server and client")
    print("| protocol | requests | errors | requests/s | p50 ms | p99 ms |\n|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['requests']} | {r['errors']} | {r['requests_per_s']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
