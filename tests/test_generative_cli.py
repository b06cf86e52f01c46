"""The generative app's command line: each verb's own flags with their defaults, `train --config` reruns a run,
a run folder of another model and a negative seed are one-line errors, and `train --strategy mirrored` on two
logical CPUs takes the steps one device takes."""

import contextlib
import io
import json
import os

import pytest

from apps.generative.__main__ import main, parse_args
from conftest import run_python
from core.errors import UserError

TINY = ["--model", "ae", "--dataset", "digits", "--limit", "64", "--epochs", "1", "--batch-size", "32",
        "--latent-dim", "4"]


def _help(verb):
    with contextlib.redirect_stdout(io.StringIO()) as text, pytest.raises(SystemExit):
        parse_args([verb, "--help"])
    return " ".join(text.getvalue().split())


@pytest.mark.parametrize("verb, shown, absent", [
    ("train", ["--epochs EPOCHS passes over the training images (default: 5)", "(default: vae)",
               "--strategy S", "(default: runs/generative/<model>)", "--config FILE", "(default: 7 9)",
               "--seed SEED random seed (default: 0)"], ["--out", "--num-samples", "--version"]),
    ("evaluate", ["--run DIR", "(default: runs/generative/<model>)", "(default: 2000)", "--model NAME"],
     ["--out", "--epochs", "--strategy", "--config", "--latent-dim"]),
    ("export", ["--run DIR", "--version VERSION", "saved_models/generative_<model>/"],
     ["--out", "--export-dir", "--epochs", "--strategy", "--limit"]),
    ("sample", ["--num NUM images (default: 64)", "--seed SEED random seed, an integer ≥ 0 (default: 0)"],
     ["--out", "--png", "--epochs", "--strategy"]),
    ("pix2pix", ["(default: runs/generative/pix2pix)", "(default: edges)", "--seed SEED"],
     ["--out", "--export-dir", "--model", "--strategy"]),
    ("quality", ["(default: runs/generative/quality)", "(default: all)"], ["--out", "--strategy"]),
])
def test_each_verb_shows_its_own_flags_with_defaults(verb, shown, absent):
    text = _help(verb)
    for words in shown:
        assert words in text, (verb, words)
    for flag in absent:
        assert flag + " " not in text, (verb, flag)


def test_train_config_json_reruns_the_same_experiment(tmp_path):
    from apps.generative.config import TrainConfig, with_model_defaults
    from core.cli import config_dict, resolve_config

    first = str(tmp_path / "first")
    main(["train", *TINY, "--seed", "3", "--noise-level", "0.2", "--no-feature-matching", "--run", first])
    with open(os.path.join(first, "config.json")) as f:
        recorded = json.load(f)
    # the "none: the model's own" values are recorded as the numbers the run used
    assert recorded["seed"] == 3 and recorded["latent_dim"] == 4 and recorded["learning_rate"] == 1e-3
    assert recorded["_app"] == "generative" and recorded["family"] == "autoencoder" and recorded["replicas"] == 1
    # `train --config` of it is the same experiment: every setting, and nothing the run recorded besides
    rerun = resolve_config(TrainConfig, parse_args(["train", "--config", os.path.join(first, "config.json")]))
    assert rerun == with_model_defaults(rerun) and config_dict(rerun) == {
        k: v for k, v in recorded.items() if k in config_dict(rerun)}
    assert rerun.noise_level == 0.2 and rerun.epochs == 1 and rerun.model == "ae"
    # ... and a flag typed after it replaces the file's value
    assert resolve_config(TrainConfig, parse_args(["train", "--config", os.path.join(first, "config.json"),
                                                   "--epochs", "3"])).epochs == 3
    # a reading verb finds the run by --run alone, and a --model that is not the run's is one line naming --run
    assert os.path.exists(main(["sample", "--run", first, "--num", "4"]))
    with pytest.raises(UserError, match=r"holds a ae run, not gan: pass the --run DIR of a gan run"):
        main(["evaluate", "--model", "gan", "--run", first])
    with pytest.raises(UserError, match=r"holds another run \(model='ae'\).*--run DIR"):
        main(["train", "--model", "vae", "--dataset", "digits", "--limit", "64", "--run", first])


@pytest.mark.parametrize("argv", [["train", "--seed", "-1"], ["sample", "--seed", "-1"],
                                  ["unrolled", "--seed", "-1"], ["pretrain", "--seed", "-1"]])
def test_a_negative_seed_is_one_line_and_exit_2(argv):
    result = run_python(["-m", "apps.generative", *argv], timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--seed must be at least 0, got -1" in lines[0], lines


MIRRORED = r"""
import csv, json, os, sys
from core import distribute
distribute.split_cpu(2)  # before TensorFlow touches a device
from apps.generative.__main__ import main
import numpy as np
from core import training
root, results = sys.argv[1], {}
# the same global batch of 64 either way: one device with 64, or two replicas with 32 each; 64 training images,
# so every epoch is one step on the same batch (only the order inside the batch may differ)
for strategy, per_replica in (("default", "64"), ("mirrored", "32")):
    run = os.path.join(root, strategy)
    main(["train", "--model", "ae", "--dataset", "digits", "--limit", "64", "--epochs", "4", "--latent-dim", "8",
          "--batch-size", per_replica, "--strategy", strategy, "--run", run])
    with open(os.path.join(run, "history.csv")) as f:
        rows = list(csv.DictReader(f))
    with open(os.path.join(run, "config.json")) as f:
        config = json.load(f)
    model = training.load_trained_model(run)
    results[strategy] = dict(loss=[float(r["loss"]) for r in rows], val=[float(r["val_loss"]) for r in rows],
                             replicas=config["replicas"], weights=[w.tolist() for w in model.get_weights()])
print("RESULT " + json.dumps(results))
"""


def test_train_under_mirrored_strategy_on_two_logical_cpus_takes_the_one_device_steps(tmp_path):
    """Two replicas of 32 images take the steps one device takes on the batch of 64.

    Both runs start from the same weights (same seed) and take 4 Adam steps on the same 64 images (one batch per
    epoch: with several, the two runs' shuffles are not guaranteed to hand out the same batches); only the order
    of float32 sums differs (the all-reduce adds two half-batch gradients), each within a few ulps (~1e-7
    relative). Measured: losses equal to 1e-7 relative, weights to 2e-8 after 3 steps; the bounds, 1e-5 and
    1e-5, leave a 100x margin. A real difference (a half batch not reduced, the gradient summed instead of
    averaged: twice Adam's step here only through epsilon, but twice the loss's scale in the history) or
    another batch moves the losses by 1e-3 and more."""
    import numpy as np

    result = run_python(["-c", MIRRORED, str(tmp_path)], timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))[7:])
    one, two = report["default"], report["mirrored"]
    assert (one["replicas"], two["replicas"]) == (1, 2)
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-5)
    np.testing.assert_allclose(two["val"], one["val"], rtol=1e-5)
    for a, b in zip(one["weights"], two["weights"]):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5)
    assert one["loss"][-1] < one["loss"][0] - 0.005  # it trained: the comparison is not of two untouched models
