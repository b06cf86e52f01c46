"""Generated docs tables (bench/docs_markers.py): figures go between the markers, the rest of the
file stays byte-identical. No server, no TensorFlow: small result dicts written to temp files."""

import json

import pytest

from bench import serving_load
from bench.docs_markers import write_between_markers

BEGIN, END = serving_load.CHAOS_BEGIN, serving_load.CHAOS_END


def chaos_result():
    """A --chaos result as serve_chaos.json holds it (JSON keys are strings)."""
    return {
        "machine": {"cpu_model": "Test CPU 9000", "cores": 3, "load_average_start": [4.25, 3.5, 2.75],
                    "started_utc": "2024-02-03T04:05:06Z"},
        "command": "python bench/serving_load.py --chaos --rate 500 --swap-seconds 15 --soak-requests 1234",
        "server_args": ["--poll-seconds", "0.2", "--body-timeout", "5"],
        "wall_s": 277.4, "load_average_end": [6.5, 5.0, 4.0], "results_file": "bench/results/serve_chaos.json",
        "failed": False,
        "figures": {
            "hot_swap": {"sent": 6752, "ok": 6752, "failed": 0, "failures": [],
                         "by_protocol": {"REST": {"sent": 3187, "failed": 0}, "gRPC": {"sent": 3565, "failed": 0}},
                         "by_version": {"1": 6090, "2": 662}, "wall_s": 15.012, "rate": 449.8, "p50_ms": 8.61,
                         "p99_ms": 35.84, "max_ms": 80.0,
                         "events": {"v2_placed": 2.0, "v2_serving": 2.27, "v3_placed": 2.77, "v3_failed": 3.0,
                                    "config_written": 3.5, "v1_serving_again": 3.72},
                         "swap_requests": 727, "swap_failed": 0, "swap_p99_ms": 30.31, "stale_answers": 0,
                         "after_broken_version": {"1": "END", "2": "AVAILABLE", "3": "END"},
                         "final_versions": {"1": "AVAILABLE", "2": "END", "3": "END"}},
            "slow_clients": {"stalled": 100, "opened_s": 0.4, "stalled_closed": 100, "stalled_answers": {"408": 100},
                             "stalled_closed_by_s": 5.4, "good_sent": 250, "good_ok": 250,
                             "good_statuses": {"200": 250}, "good_first_error": None, "good_p99_ms": 73.2,
                             "good_max_ms": 216.4},
            "soak": {"requests": 1234, "failed": 0, "failures": [], "rate": 518.3, "p99_ms": 27.94,
                     "rss_start_mib": 848.8, "rss_end_mib": 849.0, "rss_growth_mib": 0.1},
            "sigterm": {"in_flight": True, "rest_refused": True, "refused_after_s": 0.021,
                        "new_grpc_call": "UNAVAILABLE", "rest_status": 200, "rest_answer_ok": True,
                        "grpc_status": "OK", "grpc_answer_ok": True, "answered_after_s": 1.93, "exit_status": 0},
        },
    }


BEFORE = "# Deployment\n\nprose with 12 numbers, kept as is  \r\ntrailing spaces\n\n"
AFTER = "\n\nMore prose | with a pipe\n\n## 6. Not done\n- last line without newline"


def test_chaos_docs_table_between_markers_rest_byte_identical(tmp_path):
    doc = tmp_path / "deployment.md"
    doc.write_bytes(f"{BEFORE}{BEGIN}\n| old | hand-typed table |\n{END}{AFTER}".encode())
    results = tmp_path / "serve_chaos.json"
    results.write_text(json.dumps(chaos_result()))

    with pytest.raises(SystemExit) as exit_info:   # the --docs-only path: no server, no measuring
        serving_load.main(["--chaos", "--docs-only", "--results", str(results), "--docs", str(doc)])
    assert exit_info.value.code == 0

    data = doc.read_bytes()
    head, rest = data.split(BEGIN.encode(), 1)
    inside, tail = rest.split(END.encode(), 1)
    assert head == BEFORE.encode() and tail == AFTER.encode()
    inside = inside.decode()
    assert "hand-typed" not in inside
    machine_line = inside.strip().splitlines()[0]
    for fact in ("2024-02-03 04:05 UTC", "Test CPU 9000 (`lscpu` Model name)", "3 cores",
                 "load average 4.25, 3.50, 2.75 (1, 5, 15 min) at the start", "4 min 37 s in all",
                 "--soak-requests 1234", "--body-timeout 5"):
        assert fact in machine_line, fact
    rows = {line.split(" | ")[0].lstrip("| "): line for line in inside.splitlines() if line.startswith("| ")}
    assert set(rows) == {"scenario", "hot swap", "slow clients", "soak", "SIGTERM"}
    for scenario, figures in {
            "hot swap": ("6,752 requests in 15.0 s (450/s: 3,187 REST, 3,565 gRPC)", "**0 failed**",
                         "727 sent during the two swaps", "**p99 30.3 ms**", "p50 8.6 ms, p99 35.8 ms",
                         "1: 6,090, 2: 662", "0 stale", "version 2 served 0.27 s", "again 0.22 s",
                         "3: END"),
            "slow clients": ("100 stalled connections, 100 closed", "by 5.4 s", "408: 100", "**250 / 250**",
                             "p99 73 ms, max 216 ms"),
            "soak": ("1,234 requests, **0 failed**, 518/s, p99 27.9 ms", "RSS 848.8 MiB at the start, 849.0 MiB",
                     "(+0.1 MiB)"),
            "SIGTERM": ("refusing connections 0.02 s after the signal", "UNAVAILABLE", "answered 200",
                        "gRPC call OK, 1.9 s after", "exit status 0")}.items():
        for figure in figures:
            assert figure in rows[scenario], (scenario, figure)

    # rendering the same JSON again changes nothing; a file without markers is refused, untouched
    serving_load.write_chaos_docs(str(doc), json.loads(results.read_text()))
    assert doc.read_bytes() == data
    bare = tmp_path / "bare.md"
    bare.write_text("no markers here\n")
    with pytest.raises(ValueError):
        write_between_markers(str(bare), BEGIN, END, "x")
    assert bare.read_text() == "no markers here\n"


def load_result():
    """A make serve-bench result as serve_load.json holds it."""
    def row(batching, clients, protocol, rate, p50, p99, difference=0.0, errors=0):
        return {"batching": batching, "clients": clients, "protocol": protocol, "requests": 500, "errors": errors,
                "requests_per_s": rate, "p50_ms": p50, "p99_ms": p99, "max_abs_difference": difference,
                "first_error": None}
    return {
        "machine": {"cpu_model": "Test CPU 9000", "cores": 3, "load_average_start": [0.25, 0.5, 0.75],
                    "started_utc": "2024-02-03T04:05:06Z"},
        "command": "python bench/serving_load.py --requests 500 --concurrency 1 16 --batching both --batch 1",
        "model": "classify_lenet5", "batch": 1, "served": "a tiny LeNet-5 export", "server_max_concurrency": 16,
        "wall_s": 75.0, "load_average_end": [2.5, 1.0, 0.8], "results_file": "bench/results/serve_load.json",
        "failed": False,
        "rows": [row("off", 1, "REST", 61.4, 7.1, 42.1), row("off", 1, "gRPC", 229.0, 2.3, 23.5),
                 row("off", 16, "REST", 100.0, 150.0, 300.0), row("off", 16, "gRPC", 400.0, 39.0, 80.0),
                 row("on", 1, "REST", 60.0, 7.5, 44.0), row("on", 1, "gRPC", 200.0, 2.6, 25.0),
                 row("on", 16, "REST", 150.0, 100.0, 200.0, 2e-5), row("on", 16, "gRPC", 1000.0, 15.0, 30.0, 1.5e-5)],
    }


def test_serve_bench_table_sets_batching_on_beside_off(tmp_path):
    load_begin, load_end = serving_load.LOAD_BEGIN, serving_load.LOAD_END
    doc = tmp_path / "deployment.md"
    doc.write_bytes(f"{BEFORE}{load_begin}\n| hand-typed |\n{load_end}{AFTER}".encode())
    results = tmp_path / "serve_load.json"
    results.write_text(json.dumps(load_result()))

    with pytest.raises(SystemExit) as exit_info:   # the --docs-only path: no server, no measuring
        serving_load.main(["--docs-only", "--results", str(results), "--docs", str(doc)])
    assert exit_info.value.code == 0

    head, rest = doc.read_bytes().split(load_begin.encode(), 1)
    inside, tail = rest.split(load_end.encode(), 1)
    assert head == BEFORE.encode() and tail == AFTER.encode()
    lines = inside.decode().strip().splitlines()
    for fact in ("2024-02-03 04:05 UTC", "Test CPU 9000", "3 cores", "load average 0.25, 0.50, 0.75",
                 "2.50 at the end", "1 min 15 s in all", "--concurrency 1 16", "--max-concurrency 16`",
                 "none failed"):
        assert fact in lines[0], fact
    rows = [line.split(" | ") for line in lines if line.startswith("| ")]
    assert len(rows[0]) == 2 + 4 + 4 + 2 and len(rows) == 1 + 4   # header, (1, 16 clients) x (REST, gRPC)
    by_key = {(cells[0].lstrip("| "), cells[1]): cells for cells in rows[1:]}
    assert list(by_key) == [("1", "REST"), ("1", "gRPC"), ("16", "REST"), ("16", "gRPC")]
    assert by_key[("16", "gRPC")][2:] == ["400", "39.0", "80.0", "0", "1,000", "15.0", "30.0", "0", "2.50x",
                                          "1.5e-05 |"]
    assert by_key[("1", "REST")][-2:] == ["0.98x", "0 (bit-identical) |"]
