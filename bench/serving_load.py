"""Load figures for the local TF-Serving-compatible server: requests/s, p50 and p99.

    python bench/serving_load.py                       # tiny LeNet-5 export in a temp folder
    python bench/serving_load.py --config saved_models/models.config --model classify_vgg   # make demo's export
    python bench/serving_load.py --chaos               # make serve-chaos: serving under change
    python bench/serving_load.py --docs-only           # only regenerate the load table from its JSON
    python bench/serving_load.py --chaos --docs-only   # the same for the serve-chaos table

--chaos serves tiny exported models (serving/chaos.py) from
`python -m serving serve` in its own process and, from a third process
(serving/loadgen.py), runs: a hot swap under load (a new version renamed
into place, a broken version, a models.config policy change), 100 stalled
clients, a soak of `--soak-requests` requests (server RSS before/after), and a
SIGTERM with requests in flight. It writes the figures and the machine (lscpu
Model name, cores, load average at the start, date, wall time) to --results
(bench/results/serve_chaos.json, committed: the record behind the table; written whole then renamed into place),
regenerates the table between the serve-chaos markers of --docs
(docs/deployment.md; bench/docs_markers.py, as bench/run.py does for
docs/bench.md), and exits 1 if any request failed. --docs-only does the last
step alone, from the existing --results file.

Without --chaos (make serve-bench): starts `python -m serving serve` as
its own process on free loopback ports, server-side batching off and then
on (`--batching`), and drives it from this (second) process with
`--concurrency` threads, for REST and for gRPC in turn, each bounded by
`--requests` and `--max-seconds`. Every answer is checked against the
unbatched server's first answer (the largest difference is recorded). The
figures and the machine go to --results (bench/results/serve_load.json),
the table between the serve-load markers of --docs is regenerated, and the
exit status is 1 if any request failed.
"""

import argparse
import json
import os
import signal
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

from core.results import cpu_model  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TINY_MODEL = "classify_lenet5"


def tiny_export(folder):
    import keras

    from apps.classify.models import build_model
    from core import export
    from serving import config as config_lib

    keras.utils.set_random_seed(0)
    model = build_model("lenet5", (28, 28, 1), 10)
    # Named as the classify app names its exports: saved_models/classify_<model> (core.export.export_folder).
    export.export_saved_model(model, os.path.join(export.export_folder("classify", "lenet5", root=folder), "1"),
                              ["images"], ["probabilities"])
    return config_lib.write_config(os.path.join(folder, "models.config"),
                                   config_lib.build_config([TINY_MODEL]))


def start_server(config, rest_port, grpc_port, model, concurrency, batching=False):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    process = subprocess.Popen([sys.executable, "-m", "serving", "serve", "--config", config,
                                "--rest-port", str(rest_port), "--grpc-port", str(grpc_port),
                                "--max-concurrency", str(concurrency), *(["--enable-batching"] if batching else [])],
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


def drive(make_call, requests, concurrency, max_seconds, reference, largest_difference=None):
    """Run `requests` calls over `concurrency` threads; latencies in ms and wall time. `largest_difference`, a
    one-item list, keeps the largest absolute difference of an accepted answer from `reference`."""
    latencies, errors, lock = [], [], threading.Lock()
    largest_difference = [0.0] if largest_difference is None else largest_difference
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
                # 1e-4: a row answered inside a server-side batch may differ from the unbatched reference
                # by float rounding (other GEMM blocking, measured ≤ 2e-5); a wrong row differs by ~0.1
                difference = float(np.max(np.abs(np.asarray(output) - reference)))
                ok = difference <= 1e-4
            except Exception as error:  # count it and go on: this is a load test
                ok, output = False, error
            elapsed = (time.perf_counter() - start) * 1e3
            with lock:
                (latencies if ok else errors).append(elapsed if ok else repr(output)[:200])
                if ok:
                    largest_difference[0] = max(largest_difference[0], difference)

    barrier = threading.Barrier(concurrency + 1)
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return np.asarray(latencies), errors, time.perf_counter() - start


class ServerProcess:
    """`python -m serving serve` on free loopback ports (url, target, config_path, rss())."""

    def __init__(self, config, *extra):
        self.config_path = config
        rest_port, grpc_port = free_port(), free_port()
        self.url, self.target = f"http://127.0.0.1:{rest_port}", f"127.0.0.1:{grpc_port}"
        self.log_path = config + ".log"
        env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "serving", "serve", "--config", config, "--rest-port", str(rest_port),
                 "--grpc-port", str(grpc_port), *extra], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def rss(self):
        from serving.chaos import rss_mib
        return rss_mib(self.process.pid)

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


# --- --chaos: results file and the docs table ------------------------------------------------------

CHAOS_RESULTS = os.path.join("bench", "results", "serve_chaos.json")
DOCS = os.path.join("docs", "deployment.md")
CHAOS_BEGIN, CHAOS_END = "<!-- serve-chaos:begin -->", "<!-- serve-chaos:end -->"


def machine():
    """The machine line's facts, taken when a run starts."""
    return {"cpu_model": cpu_model(), "cores": os.cpu_count(),
            "load_average_start": [round(v, 2) for v in os.getloadavg()],
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def chaos_failed(figures):
    """True when any request failed or the drain did not end cleanly (make serve-chaos exits 1)."""
    slow, sigterm = figures["slow_clients"], figures["sigterm"]
    return bool(figures["hot_swap"]["failed"] or figures["soak"]["failed"]
                or slow["good_ok"] != slow["good_sent"]
                or not (sigterm["rest_answer_ok"] and sigterm["grpc_answer_ok"]) or sigterm["exit_status"] != 0)


def _cell(text):
    return str(text).replace("|", "/").replace("\n", " ")


def _counts(mapping):
    """"k: v, ..." with integer-like keys (versions, HTTP statuses) in numeric order."""
    items = sorted(mapping.items(), key=lambda kv: (not str(kv[0]).isdigit(), int(kv[0]) if str(kv[0]).isdigit()
                                                    else 0, str(kv[0])))
    return ", ".join(f"{k}: {v:,}" if isinstance(v, int) else f"{k}: {v}" for k, v in items)


def _duration(seconds):
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def _ms(value, digits=1):
    return "n/a" if value is None else f"{value:.{digits}f}"


def chaos_markdown(result):
    """The machine line and the table of a --chaos result (the dict saved as serve_chaos.json)."""
    m, f = result["machine"], result["figures"]
    load = ", ".join(f"{v:.2f}" for v in m["load_average_start"])
    date = m["started_utc"].replace("T", " ")[:16] + " UTC"
    verdict = ("some requests failed or the drain was not clean (exit 1)" if result["failed"]
               else "every request answered correctly (exit 0)")
    lines = [f"Measured {date} on {m['cpu_model']} (`lscpu` Model name), {m['cores']} cores, "
             f"load average {load} (1, 5, 15 min) at the start and {result['load_average_end'][0]:.2f} at the end; "
             f"{_duration(result['wall_s'])} in all; `{result['command']}`, server "
             f"`{' '.join(result['server_args'])}`; {verdict}. Results: `{result['results_file']}`.", "",
             "| scenario | figures |", "|---|---|"]

    swap, events = f["hot_swap"], f["hot_swap"]["events"]
    protocols = ", ".join(f"{v['sent']:,} {k}" for k, v in swap["by_protocol"].items())
    v2_after = events["v2_serving"] - events["v2_placed"]
    v1_after = events["v1_serving_again"] - events["config_written"]
    broken = swap.get("after_broken_version") or {}
    row = (f"{swap['sent']:,} requests in {swap['wall_s']:.1f} s ({swap['rate']:.0f}/s: {protocols}), "
           f"**{swap['failed']:,} failed**; {swap['swap_requests']:,} sent during the two swaps, "
           f"{swap['swap_failed']:,} failed, **p99 {_ms(swap['swap_p99_ms'])} ms** during the swaps (whole run: "
           f"p50 {_ms(swap['p50_ms'])} ms, p99 {_ms(swap['p99_ms'])} ms); answers by version: "
           f"{_counts(swap['by_version'])}; {swap['stale_answers']:,} stale; version 2 served {v2_after:.2f} s "
           f"after its rename, version 1 again {v1_after:.2f} s after the config write; once corrupt version 3 "
           f"had failed, versions {_counts(broken)}; at the end {_counts(swap['final_versions'])}")
    if swap.get("failures"):
        row += f"; first failure: `{swap['failures'][0][:160]}`"
    lines.append(f"| hot swap | {_cell(row)} |")

    slow = f["slow_clients"]
    row = (f"{slow['stalled']} stalled connections, {slow['stalled_closed']} closed by the server by "
           f"{_ms(slow['stalled_closed_by_s'])} s (answers {_counts(slow['stalled_answers'])}); meanwhile "
           f"**{slow['good_ok']:,} / {slow['good_sent']:,}** real requests answered 200, "
           f"p99 {_ms(slow['good_p99_ms'], 0)} ms, max {_ms(slow['good_max_ms'], 0)} ms")
    if slow["good_ok"] != slow["good_sent"]:
        row += f" (statuses {_counts(slow['good_statuses'])}; first error: `{slow['good_first_error']}`)"
    lines.append(f"| slow clients | {_cell(row)} |")

    soak = f["soak"]
    row = (f"{soak['requests']:,} requests, **{soak['failed']:,} failed**, {soak['rate']:.0f}/s, "
           f"p99 {_ms(soak['p99_ms'])} ms; server **RSS {soak['rss_start_mib']:.1f} MiB at the start, "
           f"{soak['rss_end_mib']:.1f} MiB at the end** ({soak['rss_growth_mib']:+.1f} MiB)")
    if soak.get("failures"):
        row += f"; first failure: `{soak['failures'][0][:160]}`"
    lines.append(f"| soak | {_cell(row)} |")

    term = f["sigterm"]
    port = ("REST port refusing connections" if term["rest_refused"] else "REST port still accepting connections")
    row = (f"{port} {term['refused_after_s']:.2f} s after the signal, a new gRPC call {term['new_grpc_call']}; "
           f"the half-sent REST request (finished after the signal) answered {term['rest_status']}"
           f"{'' if term['rest_answer_ok'] else ' (wrong answer)'} and the running gRPC call {term['grpc_status']}"
           f"{'' if term['grpc_answer_ok'] else ' (wrong answer)'}, {term['answered_after_s']:.1f} s after the "
           f"signal; exit status {term['exit_status']}")
    if not term.get("in_flight", True):
        row += " (the two requests were not seen in flight before the signal)"
    lines.append(f"| SIGTERM | {_cell(row)} |")
    return "\n".join(lines)


def write_chaos_docs(path, result):
    """Regenerate the table between CHAOS_BEGIN and CHAOS_END in `path`; nothing else changes."""
    from bench.docs_markers import write_between_markers

    write_between_markers(path, CHAOS_BEGIN, CHAOS_END, chaos_markdown(result))


def chaos_main(args):
    if args.docs_only:
        return regenerate_docs(args.results, args.docs, write_chaos_docs, "make serve-chaos")

    from serving import chaos

    facts = machine()
    started = time.monotonic()
    print(f"CPU: {facts['cpu_model']}, {facts['cores']} cores; load average at start "
          f"{' '.join(map(str, facts['load_average_start']))}", flush=True)
    figures = {}
    server_args = ["--poll-seconds", "0.2", "--drain-seconds", "10", "--header-timeout", "5", "--body-timeout", "5",
                   "--max-connections", "64"]
    with tempfile.TemporaryDirectory() as folder:
        for name in ("tiny", "swap"):
            chaos.export_tiny(os.path.join(folder, name), 1)
        chaos.export_slow(os.path.join(folder, "slow"))
        config = chaos.write_config(os.path.join(folder, "models.config"),
                                    {"tiny": "latest", "swap": "latest", "slow": "latest"})
        server = ServerProcess(config, *server_args)
        try:
            if not chaos.wait_until(lambda: all(chaos.versions(server.url, m).get(1) == "AVAILABLE"
                                                for m in ("tiny", "swap", "slow")), 180, 0.5):
                raise SystemExit(f"server not ready in 180 s:\n{server.log()[-3000:]}")
            print(f"server up ({' '.join(server_args)})", flush=True)
            swap = chaos.hot_swap(server, "swap", seconds=args.swap_seconds, rate=args.rate, lead=2.0)
            figures["hot_swap"] = {k: v for k, v in swap.items() if k not in ("start",)}
            print(f"hot swap: {swap['sent']} requests in {swap['wall_s']:.1f} s ({swap['rate']:.0f}/s), "
                  f"{swap['failed']} failed; {swap['swap_requests']} sent during the swaps, "
                  f"{swap['swap_failed']} failed, p99 {swap['swap_p99_ms']} ms (whole run p99 {swap['p99_ms']} ms); "
                  f"answers by version {swap['by_version']}, stale {swap['stale_answers']}; "
                  f"events (s) {swap['events']}", flush=True)
            slow = chaos.slow_clients(server, "tiny", stalled=100)
            figures["slow_clients"] = slow
            print(f"slow clients: {slow['stalled']} stalled connections, all closed by {slow['stalled_closed_by_s']} s "
                  f"({slow['stalled_answers']}); meanwhile {slow['good_ok']}/{slow['good_sent']} real requests "
                  f"answered 200, p99 {slow['good_p99_ms']} ms, max {slow['good_max_ms']} ms", flush=True)
            soak = chaos.soak(server, "tiny", requests=args.soak_requests, warmup=5000, seconds=args.soak_seconds)
            figures["soak"] = soak
            print(f"soak: {soak['requests']} requests, {soak['failed']} failed, {soak['rate']:.0f}/s, "
                  f"p99 {soak['p99_ms']} ms; server RSS {soak['rss_start_mib']} MiB -> {soak['rss_end_mib']} MiB "
                  f"({soak['rss_growth_mib']:+.1f})", flush=True)
            drained = chaos.drain(server, lambda: server.process.send_signal(signal.SIGTERM))
            drained["exit_status"] = server.process.wait(timeout=30)
            figures["sigterm"] = drained
            print(f"SIGTERM: REST port refused after {drained['refused_after_s']} s, new gRPC call "
                  f"{drained['new_grpc_call']}; in-flight REST {drained['rest_status']}, gRPC {drained['grpc_status']} "
                  f"(answered {drained['answered_after_s']} s after the signal); exit status {drained['exit_status']}",
                  flush=True)
        finally:
            server.stop()
    command = (f"python bench/serving_load.py --chaos --rate {args.rate:g} --swap-seconds {args.swap_seconds:g} "
               f"--soak-requests {args.soak_requests} --soak-seconds {args.soak_seconds:g}")
    result = {"machine": facts, "command": command, "server_args": server_args,
              "wall_s": round(time.monotonic() - started, 1),
              "load_average_end": [round(v, 2) for v in os.getloadavg()],
              "results_file": os.path.relpath(os.path.abspath(args.results), ROOT),
              "failed": chaos_failed(figures), "figures": figures}
    return finish(result, args.results, args.docs, write_chaos_docs, chaos_markdown)


def finish(result, results, docs, write_docs, markdown):
    """Write the result file whole, render the docs from exactly what it holds, print the table; the exit status."""
    from bench.docs_markers import write_atomic

    text = json.dumps(result, indent=1, default=str) + "\n"
    result = json.loads(text)
    write_atomic(results, text)
    print(f"load average at end {result['load_average_end'][0]:.2f}; wrote {results}")
    if docs:
        write_docs(docs, result)
        print(f"wrote {docs}")
    print(markdown(result))
    return 1 if result["failed"] else 0


def regenerate_docs(results, docs, write_docs, target):
    """--docs-only: the docs table from an existing results file, nothing measured."""
    if not os.path.exists(results):
        raise SystemExit(f"serving_load.py: error: no {results}; run `{target}` first")
    with open(results) as f:
        result = json.load(f)
    if docs:
        write_docs(docs, result)
        print(f"wrote {docs} from {results}")
    return 0


# --- make serve-bench: results file and the docs table ---------------------------------------------

LOAD_RESULTS = os.path.join("bench", "results", "serve_load.json")
LOAD_BEGIN, LOAD_END = "<!-- serve-load:begin -->", "<!-- serve-load:end -->"


def load_markdown(result):
    """The machine line and the table of a load result (the dict saved as serve_load.json): one row per
    (clients, protocol), batching off and on side by side."""
    m = result["machine"]
    load = ", ".join(f"{v:.2f}" for v in m["load_average_start"])
    date = m["started_utc"].replace("T", " ")[:16] + " UTC"
    verdict = "some requests failed (exit 1)" if result["failed"] else "every answer checked, none failed (exit 0)"
    lines = [f"Measured {date} on {m['cpu_model']} (`lscpu` Model name), {m['cores']} cores shared by the server and "
             f"the clients, load average {load} (1, 5, 15 min) at the start and {result['load_average_end'][0]:.2f} "
             f"at the end; {_duration(result['wall_s'])} in all; `{result['command']}`; served: "
             f"{result['served']}, {result['batch']} example(s) per request, server `--max-concurrency "
             f"{result['server_max_concurrency']}`; {verdict}. Results: `{result['results_file']}`.", ""]
    by_key = {(r["clients"], r["protocol"], r["batching"]): r for r in result["rows"]}
    modes = [mode for mode in ("off", "on") if any(key[2] == mode for key in by_key)]
    header = "| clients | protocol | " + " | ".join(
        f"batching {mode}: requests/s | p50 ms | p99 ms | errors" for mode in modes)
    if modes == ["off", "on"]:
        header += " | requests/s on / off | largest difference from the unbatched answer"
    lines += [header + " |", "|" + "---:|---|" + "---:|---:|---:|---:|" * len(modes)
              + ("---:|---:|" if len(modes) == 2 else "")]
    for clients, protocol in sorted({key[:2] for key in by_key}, key=lambda k: (k[0], k[1] != "REST")):
        cells = [str(clients), protocol]
        for mode in modes:
            r = by_key.get((clients, protocol, mode))
            cells += (["n/a"] * 4 if r is None else
                      [f"{r['requests_per_s']:,.0f}", _ms(r["p50_ms"]), _ms(r["p99_ms"]), f"{r['errors']:,}"])
        if len(modes) == 2:
            off, on = by_key.get((clients, protocol, "off")), by_key.get((clients, protocol, "on"))
            ratio = f"{on['requests_per_s'] / off['requests_per_s']:.2f}x" if off and on and off["requests_per_s"] \
                else "n/a"
            difference = "n/a" if on is None or on.get("max_abs_difference") is None \
                else f"{on['max_abs_difference']:.1e}" if on["max_abs_difference"] else "0 (bit-identical)"
            cells += [ratio, difference]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_load_docs(path, result):
    """Regenerate the table between LOAD_BEGIN and LOAD_END in `path`; nothing else changes."""
    from bench.docs_markers import write_between_markers

    write_between_markers(path, LOAD_BEGIN, LOAD_END, load_markdown(result))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="models.config to serve (default: a tiny export in a temp folder)")
    parser.add_argument("--model", default=TINY_MODEL, help=f"the served model's name (default: {TINY_MODEL})")
    parser.add_argument("--requests", type=int, default=500, help="per protocol")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64],
                        help="concurrent clients, one measurement per value (default: 1 16 64)")
    parser.add_argument("--batching", choices=("off", "on", "both"), default="both",
                        help="server-side batching (serve --enable-batching) off, on, or both side by side")
    parser.add_argument("--batch", type=int, default=1, help="examples per request")
    parser.add_argument("--max-seconds", type=float, default=60, help="per protocol")
    parser.add_argument("--chaos", action="store_true", help="serving under change (make serve-chaos)")
    parser.add_argument("--rate", type=float, default=500, help="--chaos: requests/s aimed at during the swap")
    parser.add_argument("--swap-seconds", type=float, default=15)
    parser.add_argument("--soak-requests", type=int, default=100_000)
    parser.add_argument("--soak-seconds", type=float, default=900, help="--chaos: the soak stops here at the latest")
    parser.add_argument("--results", help="the JSON file written (default: bench/results/serve_load.json, with "
                        "--chaos bench/results/serve_chaos.json)")
    parser.add_argument("--docs", default=os.path.join(ROOT, DOCS),
                        help="Markdown file whose table is regenerated between the serve-load (with --chaos the "
                             "serve-chaos) markers ('' for none; default: %(default)s)")
    parser.add_argument("--docs-only", action="store_true",
                        help="without measuring: regenerate --docs from the --results file")
    args = parser.parse_args(argv)
    if args.chaos:
        args.results = args.results or os.path.join(ROOT, CHAOS_RESULTS)
        sys.exit(chaos_main(args))
    args.results = args.results or os.path.join(ROOT, LOAD_RESULTS)
    if args.docs_only:
        sys.exit(regenerate_docs(args.results, args.docs, write_load_docs, "make serve-bench"))

    levels = sorted(set(args.concurrency))
    if min(levels) < 1 or args.requests < 1 or args.batch < 1:
        parser.error("--concurrency, --requests and --batch must be at least 1")
    facts = machine()
    started = time.monotonic()
    print(f"CPU: {facts['cpu_model']}, {facts['cores']} cores; load average at start "
          f"{' '.join(map(str, facts['load_average_start']))}", flush=True)
    rows, unbatched_answer = [], None
    with tempfile.TemporaryDirectory() as folder:
        config = args.config or tiny_export(folder)
        for batching in {"off": [False], "on": [True], "both": [False, True]}[args.batching]:
            server_rows, answer = measure_server(config, args, levels, batching, unbatched_answer)
            rows += server_rows
            unbatched_answer = answer if unbatched_answer is None else unbatched_answer
    command = (f"python bench/serving_load.py --requests {args.requests} --concurrency {' '.join(map(str, levels))} "
               f"--batching {args.batching} --batch {args.batch} --max-seconds {args.max_seconds:g}"
               + (f" --config {args.config} --model {args.model}" if args.config else ""))
    result = {"machine": facts, "command": command, "model": args.model, "batch": args.batch,
              "served": args.config or "a tiny LeNet-5 export (untrained: the same graph as the trained one)",
              "server_max_concurrency": max(levels), "wall_s": round(time.monotonic() - started, 1),
              "load_average_end": [round(v, 2) for v in os.getloadavg()],
              "results_file": os.path.relpath(os.path.abspath(args.results), ROOT),
              "failed": any(r["errors"] for r in rows), "rows": rows}
    return finish(result, args.results, args.docs, write_load_docs, load_markdown)


def measure_server(config, args, levels, batching, unbatched_answer=None):
    """One server process (server-side batching on or off), driven at each concurrency level over REST and
    gRPC: a row of figures per (clients, protocol), and the server's first answer. Answers are checked against
    `unbatched_answer` when given (the batching-off server's), else against this server's first answer."""
    from serving.client import GrpcClient, RestClient

    rest_port, grpc_port = free_port(), free_port()
    server = start_server(config, rest_port, grpc_port, args.model, max(levels), batching=batching)
    rows = []
    try:
        url, target = f"http://127.0.0.1:{rest_port}", f"127.0.0.1:{grpc_port}"
        signature = RestClient(url).signature(args.model)
        (alias, (_, shape)), = signature["inputs"].items()
        x = np.random.default_rng(0).uniform(0, 255, [args.batch] + shape[1:]).astype(np.float32)
        answer = np.asarray(next(iter(RestClient(url).predict(args.model, {alias: x}).values())))
        reference = answer if unbatched_answer is None else unbatched_answer
        grpc_client = GrpcClient(target)

        def rest_call():
            client = RestClient(url)
            return lambda: next(iter(client.predict(args.model, {alias: x}).values()))

        def grpc_call():
            return lambda: next(iter(grpc_client.predict(args.model, {alias: x}).values()))

        for clients in levels:
            for name, make_call in (("REST", rest_call), ("gRPC", grpc_call)):
                drive(make_call, 20, clients, 30, reference)  # warm-up
                largest = [float(np.max(np.abs(answer - reference)))]
                latencies, errors, wall = drive(make_call, args.requests, clients, args.max_seconds, reference,
                                                largest)
                rows.append({"batching": "on" if batching else "off", "clients": clients, "protocol": name,
                             "requests": int(len(latencies)), "errors": len(errors),
                             "requests_per_s": len(latencies) / wall,
                             "p50_ms": float(np.percentile(latencies, 50)) if len(latencies) else None,
                             "p99_ms": float(np.percentile(latencies, 99)) if len(latencies) else None,
                             "max_abs_difference": largest[0], "first_error": errors[0] if errors else None})
                print(f"batching {rows[-1]['batching']}, {clients} clients, {name}: {len(latencies)} answers, "
                      f"{len(errors)} errors, {rows[-1]['requests_per_s']:.0f} requests/s", flush=True)
                if errors:
                    print(f"{name}, {clients} clients: first error: {errors[0]}", file=sys.stderr)
        grpc_client.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    return rows, answer


if __name__ == "__main__":
    main()
