"""`make results`: every app's headline figure at the budget its defaults give, and the tables in
docs/results.md generated from the records.

    python bench/headlines.py                 # every row; a finished row whose code is unchanged is reused
    python bench/headlines.py --rows segment_unet,detect_ssd
    python bench/headlines.py --quick         # minutes: tiny budgets, runs/results-quick/, nothing committed

Each row is `python -m apps.<app> train --run runs/results/<row> ...` then `evaluate --run ...` (the app's own
commands, as a user types them); the evaluate writes results.json (core.results) and the row's record is
that file plus the row's command and fingerprint, kept in bench/results/headlines/<row>.json. Those
records are committed: they are the measurements, so a row measured in one sitting is kept and a later
`make results` reruns only the rows that are missing or whose fingerprint (the row's arguments and the
source of the app, core/, layers/ and losses/) changed. A killed row resumes: its train resumes in its run
folder, which records the fingerprint it was started with; a folder of other code is removed before the row
runs (`prepare_run_dir`). docs/results.md's table is rewritten from the records between its markers, never typed.
"""

import argparse
import contextlib
import dataclasses
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.docs_markers import write_between_markers  # noqa: E402
from core.checkpoints import write_json_atomically  # noqa: E402

RECORDS = os.path.join(ROOT, "bench", "results", "headlines")
DOC = os.path.join(ROOT, "docs", "results.md")
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


@dataclasses.dataclass(frozen=True)
class Row:
    """One headline: `app`'s train and evaluate with `select` (--model/--task), `quick` replacing the budget."""

    name: str
    app: str
    select: tuple = ()
    quick: tuple = ()
    headline: str = ""  # the metric the table leads with

    def commands(self, run_dir, quick=False):
        base = [sys.executable, "-m", f"apps.{self.app}"]
        return ([*base, "train", *self.select, "--run", run_dir, *(self.quick if quick else ())],
                [*base, "evaluate", *self.select, "--run", run_dir])

    def fingerprint(self, quick=False):
        """Changes when the row's arguments or the code it runs change."""
        digest = hashlib.sha256(json.dumps([self.app, self.select, self.quick if quick else ()]).encode())
        for folder in (os.path.join("apps", self.app), "core", "layers", "losses"):
            for path in sorted(glob.glob(os.path.join(ROOT, folder, "**", "*.py"), recursive=True)):
                digest.update(os.path.relpath(path, ROOT).encode())
                with open(path, "rb") as f:
                    digest.update(f.read())
        return digest.hexdigest()[:16]


ROWS = (
    Row("classify_default", "classify", (), ("--epochs", "1", "--limit", "2000"), "accuracy"),
    *(Row(f"segment_{m}", "segment", ("--model", m), ("--epochs", "1", "--limit", "64"), "mean_iou")
      for m in ("fcn", "segnet", "unet")),
    *(Row(f"detect_{m}", "detect", ("--model", m), ("--epochs", "1", "--limit", "64"), "map50")
      for m in ("ssd", "rcnn")),
    Row("caption", "sequence", ("--task", "caption"), ("--epochs", "1", "--limit", "200"), "exact_match"),
    *(Row(f"textclass_{m}", "sequence", ("--task", "textclass", "--model", m), ("--epochs", "1", "--limit", "300"),
          "accuracy") for m in ("bag", "lstm", "bigru", "transformer")),
    Row("charlm", "sequence", ("--task", "charlm"), ("--epochs", "1", "--max-chars", "20000"), "perplexity"),
    *(Row(f"dates_{m}", "sequence", ("--task", "dates", "--model", m), ("--epochs", "1", "--train-size", "500"),
          "exact_match") for m in ("bahdanau", "transformer")),
    Row("reinforce", "rl", ("--task", "reinforce"), ("--episodes", "16"), "greedy_mean_return"),
    Row("mcts", "rl", ("--task", "mcts"), ("--iterations", "1", "--games", "4", "--simulations", "8"),
        "score_vs_one-ply_greedy"),
)


FINGERPRINT_FILE = "headline_fingerprint.txt"


def prepare_run_dir(run_dir, fingerprint):
    """Keep `run_dir` only if it holds a run of this fingerprint (a killed row: train resumes it); a run of other
    code or arguments is removed first, since its epochs, best checkpoint and training clock would otherwise be
    resumed or added to. Returns True when it removed one."""
    marker = os.path.join(run_dir, FINGERPRINT_FILE)
    removed = False
    if os.path.isdir(run_dir):
        with contextlib.suppress(FileNotFoundError), open(marker) as f:
            if f.read().strip() == fingerprint:
                return False
        shutil.rmtree(run_dir)
        removed = True
    os.makedirs(run_dir)
    with open(marker, "w") as f:
        f.write(fingerprint + "\n")
    return removed


def run_row(row, *, runs, records, quick=False, log=print):
    """Train and evaluate `row` unless its record is current; returns (record, reused)."""
    path = os.path.join(records, f"{row.name}.json")
    fingerprint = row.fingerprint(quick)
    if os.path.exists(path):
        with open(path) as f:
            record = json.load(f)
        if record.get("fingerprint") == fingerprint:
            log(f"{row.name}: reused {os.path.relpath(path, ROOT)} (code and arguments unchanged)")
            return record, True
    run_dir = os.path.join(runs, row.name)
    prepare_run_dir(run_dir, fingerprint)
    start = time.time()
    for command in row.commands(run_dir, quick):
        log(f"{row.name}: {' '.join(command[2:])}")
        if subprocess.run(command, cwd=ROOT).returncode != 0:
            raise RuntimeError(f"{row.name}: `{' '.join(command[2:])}` failed")
    with open(os.path.join(run_dir, "results.json")) as f:
        record = json.load(f)
    record.update(row=row.name, fingerprint=fingerprint, quick=quick, headline=row.headline,
                  command=" ".join(row.commands(os.path.join("runs", "results", row.name), quick)[0][2:]),
                  wall_seconds=round(time.time() - start, 1))
    os.makedirs(records, exist_ok=True)
    write_json_atomically(path, record)
    return record, False


def _figure(value):
    return "–" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def table(records):
    """The Markdown table of `records`: one row each, the headline metric first."""
    lines = ["| row | headline | other metrics | baselines | budget | training time | machine | commit | code now |",
             "|---|---|---|---|---|---:|---|---|---|"]
    rows = {row.name: row for row in ROWS}
    for r in records:
        # A record measured on code that has changed since: `make results` reruns it; until then it says so.
        current = r["row"] in rows and rows[r["row"]].fingerprint(r.get("quick", False)) == r.get("fingerprint")
        metrics = dict(r["metrics"])
        head = f"{r['headline']} **{_figure(metrics.pop(r['headline'], None))}**" if r.get("headline") else ""
        budget = {k: v for k, v in r.get("budget", {}).items() if k not in ("training_seconds", "training_load_max")}
        seconds, load = r.get("budget", {}).get("training_seconds"), r.get("budget", {}).get("training_load_max")
        env = r.get("environment", {})
        lines.append(" | ".join([
            f"| `{r['row']}`", head, ", ".join(f"{k} {_figure(v)}" for k, v in metrics.items()),
            ", ".join(f"{k} {_figure(v)}" for k, v in r.get("baselines", {}).items()),
            ", ".join(f"{k} {v}" for k, v in budget.items()),
            "–" if seconds is None else f"{seconds / 60:.1f} min" + ("" if load is None else f" (load ≤ {load:.1f})"),
            f"{env.get('cpu_model', '?')}, {env.get('cores', '?')} cores", f"`{str(env.get('git_commit'))[:10]}`",
            "same" if current else "changed: rerun"]) + " |")
    return "\n".join(lines)


def from_scratch(records):
    """The wall time of `make results` from scratch: the sum of the rows' recorded wall times (each row's train
    and evaluate, measured one row at a time)."""
    seconds = [r["wall_seconds"] for r in records if r.get("wall_seconds") is not None]
    minutes = round(sum(seconds) / 60)
    missing = len(records) - len(seconds)
    return (f"From scratch, `make results` runs for the sum of its rows' wall times (train and evaluate, one row "
            f"at a time, as recorded): **{minutes // 60} h {minutes % 60:02d} min** for {len(seconds)} rows"
            + (f" ({missing} without a recorded wall time)" if missing else "")
            + ", plus `make setup` and the datasets' first preparation.")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="bench/headlines.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="",
                        help=f"comma-separated rows (default: all: {', '.join(r.name for r in ROWS)})")
    parser.add_argument("--quick", action="store_true", help="tiny budgets into runs/results-quick/; the docs and "
                                                             "the committed records are left alone")
    parser.add_argument("--docs-only", action="store_true", help="run nothing: rewrite docs/results.md from the "
                                                                 "committed records")
    args = parser.parse_args(argv)
    chosen = [r for r in ROWS if not args.rows or r.name in args.rows.split(",")]
    unknown = set(filter(None, args.rows.split(","))) - {r.name for r in ROWS}
    if unknown:
        parser.error(f"unknown rows: {', '.join(sorted(unknown))}")
    runs = os.path.join(ROOT, "runs", "results-quick" if args.quick else "results")
    records_dir = os.path.join(runs, "records") if args.quick else RECORDS
    start, failed = time.time(), []
    for row in () if args.docs_only else chosen:
        try:
            run_row(row, runs=runs, records=records_dir, quick=args.quick)
        except RuntimeError as error:
            failed.append(str(error))
            print(f"note: {error}; the other rows go on")
    records = []
    for row in ROWS:
        path = os.path.join(records_dir, f"{row.name}.json")
        if os.path.exists(path):
            with open(path) as f:
                records.append(json.load(f))
    body = table(records) + "\n\n" + from_scratch(records)
    print(body)
    if not args.quick:
        write_between_markers(DOC, BEGIN, END, body)
        print(f"wrote {os.path.relpath(DOC, ROOT)}")
    print(f"make results finished in {(time.time() - start) / 60:.1f} min")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
