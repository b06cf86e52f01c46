"""apps.style's command line: train/evaluate/export/predict of the fast stylizer and the `transfer` experiment,
each verb's help with its own flags and defaults, `train --config` reruns a run, a folder of another run names
--run, one-line errors, and `train` under MirroredStrategy on two logical CPUs equals one device (real TF)."""

import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from apps.style.__main__ import main
from core.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--steps", "4", "--size", "16", "--batch-size", "2"]


def help_of(verb):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stop:
        main([verb, "--help"])
    assert stop.value.code == 0
    return " ".join(out.getvalue().split())


@pytest.mark.parametrize("verb, present, absent", [
    ("train", ["--steps", "(default: 300)", "--batch-size", "(default: 4)", "--strategy S", "--config FILE",
               "(default: runs/style/<model>)", "random, vgg19 (default: random)"],
     ["--out", "--export-dir", "--count"]),
    ("evaluate", ["--count", "(default: 8)", "--run DIR", "--model NAME"], ["--steps", "--strategy", "--config"]),
    ("export", ["--export-dir", "DIR/style_<model>/<version>/", "--version"], ["--steps", "--strategy"]),
    ("predict", ["IMAGE", "--size", "(default: 128)"], ["--steps", "--export-dir", "--strategy"]),
    ("transfer", ["--steps", "(default: 200)", "--learning-rate", "(default: 4.0)", "(default: runs/style/transfer)"],
     ["--strategy", "--batch-size", "--out"]),
])
def test_each_verb_lists_its_own_flags_with_defaults(verb, present, absent):
    text = help_of(verb)
    for expected in present:
        assert expected in text, expected
    for unexpected in absent:
        assert unexpected + " " not in text, unexpected


@pytest.mark.parametrize("argv, message", [
    (["train", "--seed", "-1"], "--seed must be at least 0, got -1"),
    (["transfer", "--seed", "-1"], "--seed must be at least 0, got -1"),
    (["train", "--size", "18"], "--size must be a multiple of 4"),
])
def test_bad_numbers_are_one_line_exit_2(argv, message, tmp_path):
    result = subprocess.run([sys.executable, "-m", "apps.style", *argv, "--run", str(tmp_path / "r")], cwd=ROOT,
                            capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
                            timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


@pytest.fixture(scope="module")
def style_run(tmp_path_factory):
    run = str(tmp_path_factory.mktemp("style") / "run")
    main(["train", *TINY, "--run", run, "--strategy", "default"])
    return run


def test_config_reruns_and_the_other_verbs_read_the_run(style_run, tmp_path, capsys):
    first = json.load(open(os.path.join(style_run, "config.json")))
    assert first["_app"] == "style" and first["model"] == "fast" and first["steps"] == 4 and first["replicas"] == 1
    again = str(tmp_path / "again")
    main(["train", "--config", os.path.join(style_run, "config.json"), "--run", again, "--strategy", "default"])
    assert json.load(open(os.path.join(again, "config.json"))) == first
    report = main(["evaluate", "--run", style_run, "--count", "2"])
    assert set(report) == {"stylized", "unstylized"} and report["unstylized"]["content"] == 0
    paths = main(["predict", "coffee", "--run", style_run, "--size", "32"])
    assert paths == [os.path.join(style_run, "stylized_coffee.png")] and os.path.getsize(paths[0]) > 500


def test_a_folder_of_another_run_names_run(style_run, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"_app": "sequence", "task": "dates", "model": "bahdanau"}))
    for argv in (["evaluate", "--run", str(other)], ["export", "--run", str(other)]):
        with pytest.raises(UserError, match="--run") as error:
            main(argv)
        assert "\n" not in str(error.value)
    with pytest.raises(UserError, match="holds another run.*--run"):
        main(["train", *TINY, "--style", "coffee", "--run", style_run])


TWO_CPUS = """
import sys
from core import distribute
distribute.split_cpu(2)
from apps.style.__main__ import main
for strategy in ("default", "mirrored"):
    main(["train", *sys.argv[2:], "--run", f"{sys.argv[1]}/{strategy}", "--strategy", strategy])
"""


def test_mirrored_on_two_logical_cpus_trains_as_one_device(tmp_path):
    """The real `train` on two logical CPUs, one run per strategy, same seed and batches. Each replica's loss is its
    half-batch mean over 2 and the optimizer sums the two gradients: the one-device gradient on the whole batch, up to
    float32 summation order (~1e-7 relative). Through 4 Adam steps that stays far below the tolerance: 1e-4
    relative on the logged losses and 1e-4 on the weights (Adam moves each weight by ~2e-3 a step, so a wrong
    split of the batch or a missing all-reduce moves them by far more)."""
    result = subprocess.run([sys.executable, "-c", TWO_CPUS, str(tmp_path), *TINY], cwd=ROOT, capture_output=True,
                            text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT})
    assert result.returncode == 0, result.stderr[-2000:]
    from apps.style import stylizer  # noqa: F401  (registers the stylizer's layers)
    from core.training import load_model_file

    histories, weights = {}, {}
    for strategy in ("default", "mirrored"):
        run = tmp_path / strategy
        assert json.load(open(run / "config.json"))["replicas"] == (1 if strategy == "default" else 2)
        histories[strategy] = json.load(open(run / "history.json"))
        weights[strategy] = load_model_file(str(run / "model.keras")).get_weights()
    for one, two in zip(histories["default"], histories["mirrored"]):
        for key in ("content", "style", "tv"):
            assert two[key] == pytest.approx(one[key], rel=1e-4), (one, two)
    for one, two in zip(weights["default"], weights["mirrored"]):
        np.testing.assert_allclose(two, one, atol=1e-4)
