"""apps.sequence's command line: {train,evaluate,export,predict} --task TASK, each verb's help lists its own flags
with their defaults, `train --config` reruns a run, a run folder of another task names --run, one-line errors, and
`train` under MirroredStrategy on two logical CPUs (real TF, real fortunes)."""

import contextlib
import io
import json
import os
import subprocess
import sys

import pytest

from apps.sequence.__main__ import main, parse_args, verb_parser
from core.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_TEXTCLASS = ["--model", "bag", "--epochs", "1", "--limit", "64", "--sequence-length", "16", "--max-tokens", "300",
                  "--batch-size", "16"]


def help_text(verb, task):
    return " ".join(verb_parser(verb, task).format_help().split())


@pytest.mark.parametrize("verb, task, present, absent", [
    ("train", "charlm", ["--layers", "(default: 2)", "--steps", "(default: 100)", "--strategy S", "--config FILE",
                         "(default: runs/sequence/charlm)"], ["--model", "--train-size", "--out", "--export-dir"]),
    ("train", "dates", ["--model", "bahdanau, transformer (default: bahdanau)", "--train-size", "(default: 20000)",
                        "(default: runs/sequence/dates_<model>)"], ["--cell", "--sequence-length", "--out"]),
    ("train", "caption", ["--scenes", "(default: fashion_mnist_96)", "--max-objects"], ["--cell", "--width"]),
    ("evaluate", "dates", ["--width", "(default: 1)", "--model", "--run DIR"], ["--epochs", "--config", "--strategy"]),
    ("export", "charlm", ["--export-dir", "DIR/sequence_charlm/<version>/", "--length", "(default: 200)"],
     ["--model", "--epochs", "--method"]),
    ("predict", "charlm", ["PROMPT", "--method", "(default: sample)", "--seed", "(default: 0)"],
     ["--epochs", "--export-dir", "--saved-model"]),
    ("predict", "textclass", ["TEXT", "--saved-model", "(default: bigru)"], ["--method", "--epochs"]),
    ("predict", "caption", ["IMAGE", "--count", "(default: 8)"], ["--model", "--epochs"]),
])
def test_each_verb_lists_its_own_flags_with_defaults(verb, task, present, absent):
    text = help_text(verb, task)
    for expected in present:
        assert expected in text, expected
    for unexpected in absent:
        assert unexpected + " " not in text, unexpected


def test_a_verb_without_task_says_how_to_go_on_and_the_top_level_lists_the_verbs():
    assert "`train --task TASK --help` lists the task's flags" in help_text("train", None)
    for argv in (["train"], ["charlm", "train"], ["train", "--task", "poetry"]):
        with contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit) as stop:
            parse_args(argv)
        assert stop.value.code == 2
    args = parse_args(["predict", "--task", "caption", "--run", "r", "a.png", "--width", "2", "b.png"])
    assert args.images == ["a.png", "b.png"] and args.width == 2  # files may come between the options


@pytest.mark.parametrize("argv", [["train", "--task", "dates", "--seed", "-1"],
                                  ["predict", "--task", "charlm", "hi", "--seed", "-1"],
                                  ["vanishing", "--seed", "-1"]])
def test_negative_seed_is_one_line_exit_2(argv):
    result = subprocess.run([sys.executable, "-m", "apps.sequence", *argv], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == "apps.sequence: error: --seed must be at least 0, got -1"


@pytest.fixture(scope="module")
def textclass_run(tmp_path_factory):
    run = str(tmp_path_factory.mktemp("tc") / "run")
    main(["train", "--task", "textclass", *TINY_TEXTCLASS, "--run", run, "--strategy", "default"])
    return run


def test_train_config_reruns_the_same_experiment_and_the_run_records_its_facts(textclass_run, tmp_path):
    first = json.load(open(os.path.join(textclass_run, "config.json")))
    assert first["_app"] == "sequence" and first["task"] == "textclass" and first["model"] == "bag"
    assert first["limit"] == 64 and first["class_names"] and first["replicas"] == 1
    again = str(tmp_path / "again")
    main(["train", "--task", "textclass", "--config", os.path.join(textclass_run, "config.json"), "--run", again])
    second = json.load(open(os.path.join(again, "config.json")))
    assert {k: v for k, v in second.items() if k != "strategy"} == {k: v for k, v in first.items() if k != "strategy"}


def test_a_run_of_another_task_or_model_names_run(textclass_run):
    for argv in (["evaluate", "--task", "dates", "--run", textclass_run],
                 ["predict", "--task", "charlm", "hi", "--run", textclass_run],
                 ["train", "--task", "textclass", *TINY_TEXTCLASS, "--model", "lstm", "--run", textclass_run]):
        with pytest.raises(UserError, match="--run") as error:
            main(argv)
        assert "\n" not in str(error.value)


def test_charlm_refuses_mirrored_in_one_line(tmp_path):
    with pytest.raises(UserError, match="cannot train under --strategy mirrored: its stateful RNN") as error:
        main(["train", "--task", "charlm", "--strategy", "mirrored", "--run", str(tmp_path / "lm")])
    assert "\n" not in str(error.value) and not os.path.exists(tmp_path / "lm")
