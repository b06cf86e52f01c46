"""`classify search` chooses a training recipe on the validation split, never the test split: a tiny search on
real Fashion-MNIST (mlp, 400 examples, one epoch) whose data folder holds the training files only, so a search
that opened the test split would fail; a rerun reuses every finished trial; a bad space is one line."""

import contextlib
import io
import json
import os
import shutil

import numpy as np
import pytest

from apps.classify import search
from apps.classify.__main__ import main, parse_args, train_config
from apps.classify.config import TrainConfig
from conftest import run_python
from core import data
from core.cli import config_dict
from core.errors import UserError

TINY = ["--model", "mlp", "--limit", "400", "--epochs", "1", "--seeds", "1"]
# A recipe that learns, one that cannot (a rate of 0 leaves the random initial weights), and one whose loss
# becomes NaN at once: a result of the search (ranked last), not a reason to stop it.
SPACE = [{"name": "adam", "overrides": {"batch_size": 32}},
         {"name": "frozen", "overrides": {"batch_size": 32, "learning_rate": 0.0}},
         {"name": "explodes", "overrides": {"batch_size": 32, "optimizer": "sgd", "learning_rate": 1e30}}]


@contextlib.contextmanager
def training_files_only(folder):
    """Fashion-MNIST with its test files gone: the real training files in `folder`, and core.data reading from
    there (as FASHION_MNIST_DIR would make it); opening the test split is then 'file not found'."""
    os.makedirs(folder, exist_ok=True)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        if not os.path.exists(os.path.join(folder, name)):
            os.symlink(os.path.join(data.FASHION_MNIST_DIR, name), os.path.join(folder, name))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(data, "FASHION_MNIST_DIR", str(folder))
        yield


def run_search(run, space, folder):
    """`python -m apps.classify search` (in this process) on the training files only; returns its output."""
    output = io.StringIO()
    with training_files_only(os.path.join(folder, "fashion_mnist")), contextlib.redirect_stdout(output):
        main(["search", *TINY, "--space", space, "--run", run])
    return output.getvalue()


def write_space(path, space):
    with open(path, "w") as f:
        json.dump(space, f)
    return str(path)


def read_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def tiny_search(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("search"))
    space = write_space(os.path.join(folder, "space.json"), SPACE)
    run = os.path.join(folder, "run")
    return dict(folder=folder, space=space, run=run, output=run_search(run, space, folder))


def test_the_search_picks_the_recipe_with_the_best_validation_accuracy(tiny_search):
    with open(os.path.join(tiny_search["run"], "search.json")) as f:
        summary = json.load(f)
    assert summary["winner"] == "adam" and summary["split"] == "validation"
    rows = {row["recipe"]: row for row in summary["table"]}
    assert rows["adam"]["val_accuracy_mean"] > rows["frozen"]["val_accuracy_mean"] + 0.2, rows
    assert [row["recipe"] for row in summary["table"]] == ["adam", "frozen", "explodes"]
    assert rows["explodes"]["diverged"] == 1 and rows["explodes"]["val_accuracy_mean"] is None
    output = tiny_search["output"]
    assert "winner: adam" in output and '    "mlp": dict(epochs=10, batch_size=32),' in output
    png = os.path.join(tiny_search["run"], "search.png")
    assert f"PNG: {png}" in output and os.path.getsize(png) > 0
    # A trial is `classify train` with the recipe's settings typed: the same config.json, in its own folder.
    with open(os.path.join(tiny_search["run"], "adam-seed0", "config.json")) as f:
        trained = json.load(f)
    typed = train_config(parse_args(["train", "--model", "mlp", "--epochs", "1", "--limit", "400",
                                     "--batch-size", "32"]))
    assert {k: trained[k] for k in config_dict(TrainConfig())} == config_dict(typed)


def test_the_search_never_reads_the_test_split(tiny_search):
    """The fixture's search ran with Fashion-MNIST's test files absent (an `evaluate`, a `score` on the test
    split, a `load_dataset` would have failed); and nothing it recorded is a test figure."""
    def keys(value):
        if isinstance(value, dict):
            return set(value) | {k for v in value.values() for k in keys(v)}
        if isinstance(value, list):
            return {k for v in value for k in keys(v)}
        return set()

    records = read_lines(os.path.join(tiny_search["run"], "search.jsonl"))
    assert [(r["recipe"], r["seed"]) for r in records] == [("adam", 0), ("frozen", 0), ("explodes", 0)]
    assert all(len(r["val_accuracy_by_epoch"]) == 1 and r["val_accuracy"] == r["val_accuracy_by_epoch"][-1]
               for r in records[:2])
    assert "loss became nan" in records[2]["diverged"]
    with open(os.path.join(tiny_search["run"], "search.json")) as f:
        found = keys(records) | keys(json.load(f))
    assert "val_accuracy" in found and not [k for k in found if "test" in k.lower()]


def test_a_rerun_reuses_every_finished_trial(tiny_search):
    log = os.path.join(tiny_search["run"], "search.jsonl")
    history = os.path.join(tiny_search["run"], "adam-seed0", "history.csv")
    with open(log, "rb") as f:
        before = f.read()
    trained_at = os.path.getmtime(history)
    output = run_search(tiny_search["run"], tiny_search["space"], tiny_search["folder"])
    assert output.count(": reused: ") == 3 and "training in" not in output
    with open(log, "rb") as f:
        assert f.read() == before
    assert os.path.getmtime(history) == trained_at and "winner: adam" in output


def test_a_trial_whose_line_a_kill_cut_short_trains_again(tiny_search, tmp_path):
    run = str(tmp_path / "run")
    shutil.copytree(tiny_search["run"], run)
    log = os.path.join(run, "search.jsonl")
    with open(log) as f:
        lines = f.readlines()
    with open(log, "w") as f:
        f.writelines([*lines[:2], lines[2][:len(lines[2]) // 2]])  # as a plain append cut off by a kill leaves it
    output = run_search(run, tiny_search["space"], tiny_search["folder"])
    assert f"warning: {log} line 3 is skipped" in output
    assert "frozen, seed 0: reused" in output and "explodes, seed 0: training in" in output
    assert [(r["recipe"], r["seed"]) for r in read_lines(log)] == [("adam", 0), ("frozen", 0), ("explodes", 0)]


def test_a_run_folder_of_a_search_with_other_settings_is_refused(tiny_search, tmp_path):
    """Another --epochs in the same --run would mix two searches: refused in one line, from the finished
    trials' records, and from a trial folder a kill left without its record."""
    run = str(tmp_path / "run")
    shutil.copytree(tiny_search["run"], run)
    longer = ["search", *TINY, "--epochs", "2", "--space", tiny_search["space"], "--run", run]
    with pytest.raises(UserError, match=r"holds a search with other settings \(adam-seed0: epochs=1, not 2\).*--run"):
        main(longer)
    os.remove(os.path.join(run, "search.jsonl"))
    with pytest.raises(UserError, match=r"holds a search with other settings \(adam-seed0: epochs=1, not 2\)"):
        main(longer)


def test_a_space_file_with_an_unknown_setting_is_one_line_and_exit_2(tmp_path):
    space = write_space(tmp_path / "space.json", [{"name": "fast", "overrides": {"lr": 0.1}}])
    result = run_python(["-m", "apps.classify", "search", "--space", space, "--run", str(tmp_path / "run")])
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("apps.classify: error: ") and "unknown setting 'lr'" in lines[0]
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.parametrize("space, message", [
    ([{"name": "a", "overrides": {"learning_rate": -1}}], "--learning-rate must be at least 0.0"),
    ([{"name": "a", "overrides": {"optimizer": "adamw"}}], "--optimizer must be one of"),
    ([{"name": "a", "overrides": {"limit": 10}}], "limit is the same for every recipe"),
    ([{"name": "a", "overrides": {"model": "vgg"}}], "model is the same for every recipe"),
    ([{"name": "a", "overrides": {}}, {"name": "a", "overrides": {}}], "two recipes are named 'a'"),
    ([{"name": "../a", "overrides": {}}], "recipe name '../a'"),
    ([{"name": "a", "overrides": {}, "seed": 1}], "exactly the keys name and overrides"),
    ({"name": "a", "overrides": {}}, "should be a JSON list"),
    ([{"name": "a", "overrides": {"augment": "flip,crpo"}}], "unknown augmentation"),  # caught before training
])
def test_a_bad_space_is_refused_before_anything_trains(tmp_path, space, message):
    path = write_space(tmp_path / "space.json", space)
    with pytest.raises(UserError, match=message):
        main(["search", *TINY, "--space", path, "--run", str(tmp_path / "run")])
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.parametrize("content, message", [
    (b"", "corrupt .*space.json: Expecting value"),  # empty
    (b'[{"name": "a", "overr', "corrupt .*space.json: Unterminated string"),  # truncated
    (b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "corrupt .*space.json: 'utf-8' codec can't decode"),  # binary
    (None, "cannot read .*space.json: No such file or directory"),
])
def test_a_damaged_space_file_is_one_line(tmp_path, content, message):
    path = tmp_path / "space.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        main(["search", "--space", str(path), "--run", str(tmp_path / "run")])


def test_the_default_space_is_valid_and_holds_the_current_default_budget():
    recipes = search.read_space()
    assert 5 <= len(recipes) <= 8
    current = search.budget_entry("vgg", {})
    assert any(search.budget_entry("vgg", r.overrides) == current for r in recipes)


def test_the_search_splits_the_training_images_as_train_does():
    config = TrainConfig(limit=50, seed=3)
    ours = search.load_train_and_validation(config)
    theirs = data.load_dataset("fashion_mnist", val_fraction=config.val_fraction, seed=3, limit=50)
    assert ours.test is None and ours.num_train == theirs.num_train
    for split in ("train", "val"):
        (x, y), (x_train, y_train) = (next(getattr(d, split).batch(1000).as_numpy_iterator()) for d in (ours, theirs))
        assert len(y) == 50
        np.testing.assert_array_equal(x, x_train)
        np.testing.assert_array_equal(y, y_train)


def test_search_help_shows_its_flags_and_defaults():
    output = io.StringIO()
    with contextlib.redirect_stdout(output), pytest.raises(SystemExit):
        parse_args(["search", "--help"])
    text = " ".join(output.getvalue().split())
    for expected in ["--space SPACE", "--seeds SEEDS K: each recipe trains with the seeds SEED..SEED+K-1 (default: 3)",
                     "(default: runs/classify/search)", "--model MODEL", "--epochs EPOCHS", "--limit LIMIT",
                     "--seed SEED"]:
        assert expected in text, expected
    assert "--strategy" not in text and "--out" not in text
