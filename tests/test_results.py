"""results.json (core.results): every evaluate's record of its figures, budget and machine; the training clock
that `core.training.fit` keeps across resumes."""

import json
import os
import subprocess

import keras
import tensorflow as tf

from conftest import ROOT, tiny_dataset
from core import plots, results, training


def tiny_model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def test_fit_keeps_the_training_time_across_a_resumed_run(tmp_path):
    run_dir = str(tmp_path)
    training.fit(tiny_model(), tiny_dataset(0), tiny_dataset(1), epochs=2, run_dir=run_dir)
    first = results.training_seconds(run_dir)
    assert first is not None and first > 0
    # a second command with more epochs resumes from the backup: it trains one more epoch and adds its time
    training.fit(tiny_model(), tiny_dataset(0), tiny_dataset(1), epochs=3, run_dir=run_dir)
    assert results.training_seconds(run_dir) > first
    # the load at the epochs' ends is kept too (this test's own process keeps it above 0), so a time measured
    # with the cores shared says so
    assert results.training_load(run_dir) > 0
    assert len(plots.read_history(os.path.join(run_dir, "history.csv"))["epoch"]) == 3  # history unchanged


def test_results_json_records_metrics_baselines_budget_and_machine(tmp_path):
    (tmp_path / results.CLOCK_FILE).write_text(json.dumps({"seconds": 12.5, "load_average_max": 3.1}))
    path = results.write_results(str(tmp_path), app="segment", model="unet", dataset="fashion_mnist_96",
                                 metrics={"miou": 0.5, "broken": float("nan")}, baselines={"all_background": 0.07},
                                 budget={"epochs": 4, "limit": 8000}, seed=3)
    record = json.load(open(path))
    assert record["metrics"] == {"miou": 0.5, "broken": None}  # NaN is not JSON: null, never the bare token
    assert record["baselines"] == {"all_background": 0.07} and record["split"] == "test" and record["seed"] == 3
    assert record["budget"] == {"epochs": 4, "limit": 8000, "training_seconds": 12.5, "training_load_max": 3.1}
    env = record["environment"]
    assert env["tensorflow"] == tf.__version__ and env["keras"] == keras.__version__ and env["cpu_model"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    if head:  # a checkout: the commit the figure was measured on
        assert env["git_commit"].split("+")[0] == head
    assert not os.path.exists(path + ".tmp")  # written atomically
