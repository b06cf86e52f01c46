"""results.json: what every `evaluate` records in its run folder, so the figures in docs/ are generated from
files and every figure carries its budget and machine.

    {"app": "segment", "model": "unet", "dataset": "fashion_mnist_96", "split": "test",
     "metrics": {"miou": 0.66, ...}, "baselines": {"all_background_miou": 0.072},
     "budget": {"epochs": 4, "limit": 8000, "batch_size": 16, "training_seconds": 336.0},
     "seed": 0, "environment": {"git_commit": "...", "tensorflow": "2.21.0", "cpu_model": "AMD EPYC", ...}}

`training_seconds` is the wall time of the run's training epochs, summed across resumes
(`core.training.TrainingClock`, one of `fit`'s callbacks, keeps it in the run's training_time.json).
"""

import json
import os
import platform
import subprocess
import time

from core.checkpoints import write_json_atomically

RESULTS_FILE = "results.json"
CLOCK_FILE = "training_time.json"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_model():
    """`lscpu`'s Model name (else /proc/cpuinfo's model name, else platform.processor())."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10,
                             env=dict(os.environ, LC_ALL="C")).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def git_commit(root=ROOT):
    """HEAD's hash, with "+changes" when tracked files differ from it (the figure is then not that commit's);
    None outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                 capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + ("+changes" if changed else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment():
    """Where a figure was measured: commit, library versions, CPU and the oneDNN setting."""
    import keras
    import tensorflow as tf

    return {"git_commit": git_commit(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "python": platform.python_version(), "cpu_model": cpu_model(), "cores": os.cpu_count(),
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default")}


def _clock(run_dir, key):
    try:
        with open(os.path.join(run_dir, CLOCK_FILE)) as f:
            return float(json.load(f)[key])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def training_seconds(run_dir):
    """The run's training wall time (TrainingClock's file), None when it was not recorded."""
    return _clock(run_dir, "seconds")


def training_load(run_dir):
    """The highest 1-minute load average TrainingClock saw at an epoch's end, None when not recorded: a training
    time measured with the cores shared (load above their count) is longer than on an idle machine."""
    return _clock(run_dir, "load_average_max")


# The settings of a run's config.json that decide how long it trained (the apps name them alike).
BUDGET_KEYS = ("epochs", "steps", "batch_size", "limit", "train_size", "max_chars", "frames", "episodes",
               "iterations", "games")


def budget_of(config, keys=BUDGET_KEYS):
    """The budget settings present in a run's config (a dict)."""
    return {k: config[k] for k in keys if k in config}


def write_results(run_dir, *, app, model, metrics, dataset, split="test", baselines=None, budget=None, seed=None):
    """Write `run_dir`/results.json (atomically) and return its path. `metrics` and `baselines`: name -> number;
    `budget`: the settings that decide how long the run trained (epochs, steps, examples; `training_seconds`
    when the app keeps its own clock, else the run's TrainingClock file)."""
    record = {"app": app, "model": model, "dataset": dataset, "split": split,
              "metrics": {k: _number(v) for k, v in metrics.items()},
              "baselines": {k: _number(v) for k, v in (baselines or {}).items()},
              "budget": {"training_seconds": training_seconds(run_dir), "training_load_max": training_load(run_dir),
                         **(budget or {})},
              "seed": seed, "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "environment": environment()}
    path = os.path.join(run_dir, RESULTS_FILE)
    write_json_atomically(path, record)
    return path


def _number(value):
    value = float(value)
    return value if value == value else None  # NaN is not JSON: recorded as null

