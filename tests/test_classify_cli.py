"""The classify command line on the suite's contract: each verb's help lists its own flags with their defaults,
one run folder per model (runs/classify/<model>) for every verb, `train --config` reruns a run's config, exports
go to saved_models/classify_<model>/."""

import contextlib
import io
import json
import os

import pytest

from apps.classify.__main__ import main, parse_args, train_config
from apps.classify.config import TrainConfig
from core.cli import config_dict

TINY = ["--model", "mlp", "--dataset", "digits", "--limit", "120", "--epochs", "1", "--batch-size", "32"]


def help_text(verb):
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), pytest.raises(SystemExit) as stop:
        parse_args([verb, "--help"])
    assert stop.value.code == 0
    return " ".join(stdout.getvalue().split())


@pytest.mark.parametrize("verb, own, foreign", [
    ("train", ["--epochs EPOCHS total epochs (default: 5)", "--run DIR the run folder (default: runs/classify/<model>)",
               "--config FILE", "--strategy S", "--seed SEED", "(default: vgg)", "--batchnorm, --no-batchnorm"],
     ["--export-dir", "--folds", "--saved-model", "--out"]),
    ("evaluate", ["--run DIR the run folder (default: runs/classify/<model>)", "(default: vgg)", "--limit LIMIT"],
     ["--epochs", "--strategy", "--config", "--export-dir", "--out"]),
    ("export", ["--export-dir DIR root of the exports (default: saved_models)", "--version VERSION"],
     ["--epochs", "--strategy", "--limit", "--out"]),
    ("predict", ["--saved-model DIR", "--top TOP how many classes to print (default: 3)", "--run DIR"],
     ["--epochs", "--strategy", "--export-dir", "--out"]),
    ("zoo", ["--run DIR one run folder per model, and zoo.md (default: runs/classify/zoo)", "epochs=2"],
     ["--strategy", "--model MODEL", "--out"]),
    ("cv", ["--folds FOLDS K, the number of folds (default: 5)", "(default: runs/classify/cv)"],
     ["--strategy", "--out"]),
    ("study", ["--run DIR root of the study folders (default: runs/classify/study)", "--seed SEED"],
     ["--epochs", "--out"]),
])
def test_each_verbs_help_shows_its_own_flags_with_defaults(verb, own, foreign):
    text = help_text(verb)
    for expected in own:
        assert expected in text, (verb, expected)
    for unexpected in foreign:
        assert unexpected not in text, (verb, unexpected)


def test_train_config_reruns_a_runs_config_json(tmp_path):
    first = str(tmp_path / "first")
    main(["train", *TINY, "--learning-rate", "0.004", "--no-batchnorm", "--run", first])
    with open(os.path.join(first, "config.json")) as f:
        recorded = json.load(f)
    # What the flags gave: the flags typed, on mlp's budget (budgets.py), on TrainConfig's defaults.
    assert recorded["learning_rate"] == 0.004 and recorded["batchnorm"] is False and recorded["lr_schedule"] == "cosine"
    assert recorded["_app"] == "classify" and recorded["image_shape"] == [28, 28, 1]
    rerun = train_config(parse_args(["train", "--config", os.path.join(first, "config.json")]))
    assert config_dict(rerun) == {k: recorded[k] for k in config_dict(TrainConfig())}
    # A flag typed after --config replaces the file's value, and only that one.
    changed = train_config(parse_args(["train", "--config", os.path.join(first, "config.json"), "--epochs", "2"]))
    assert config_dict(changed) == {**config_dict(rerun), "epochs": 2}


def test_every_verb_finds_the_run_of_its_model_in_runs_classify_model(tmp_path, monkeypatch, capsys):
    """make demo then make classify ARGS="--model lenet5" collided in runs/classify; now each model has its folder,
    and evaluate/export/predict find it from --model, as from --run."""
    monkeypatch.chdir(tmp_path)
    os.makedirs("runs/classify/vgg")
    with open("runs/classify/vgg/config.json", "w") as f:
        json.dump({"model": "vgg", "dataset": "fashion_mnist"}, f)  # a demo's run, left where it was
    main(["train", *TINY])
    assert os.path.exists("runs/classify/mlp/model.keras")
    assert "next: python -m apps.classify evaluate --run runs/classify/mlp" in capsys.readouterr().out
    main(["evaluate", "--model", "mlp", "--limit", "60"])
    assert os.path.exists("runs/classify/mlp/confusion_matrix.png")
    main(["export", "--run", "runs/classify/mlp"])
    assert os.path.exists("saved_models/classify_mlp/1/saved_model.pb")
    assert os.path.exists("saved_models/classify_mlp/tflite/1/float.tflite")
