"""The app contract (docs/CONVENTIONS.md) holds for every app: the same verbs, `--run` for every verb (no
`--out`), `--config`, `--strategy` and `--seed` on `train`, the defaults shown in each verb's help, and one export
naming rule. The help is parsed in-process (no TensorFlow is imported)."""

import ast
import os
import re

import pytest
from cli_help import help_text

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APPS = sorted(name for name in os.listdir(os.path.join(ROOT, "apps"))
              if os.path.isfile(os.path.join(ROOT, "apps", name, "__main__.py")))
TRAINING_APPS = ("classify", "detect", "generative", "rl", "segment", "sequence", "style")
TASKS = {"sequence": ("charlm", "textclass", "dates", "caption"), "rl": ("dqn", "reinforce", "mcts")}
MODEL_VERBS = ("train", "evaluate", "export", "predict")


def app_help(app, words):
    """The --help of `python -m apps.<app> <words>` (it must be accepted)."""
    text = help_text(f"apps.{app}", words)
    assert text is not None, f"apps.{app} {' '.join(words)} --help is refused"
    return text


def verbs(app):
    """The verbs of the app's top-level help: argparse lists them as {a,b,c} in the usage line (unless the
    subparsers have a metavar) and each one with a help text indented by four spaces under the positionals."""
    text = app_help(app, [])
    usage = re.search(r"\{([\w,-]+)\}", text.split("\n\n")[0])
    listed = set(usage.group(1).split(",")) if usage else set()
    positionals = text.split("positional arguments:", 1)[-1].split("\n\n")[0]
    listed |= set(re.findall(r"^    ([a-z][\w-]*)(?:\s|$)", positionals, flags=re.M))
    assert listed, f"apps.{app} has no verbs"
    return sorted(listed)


def flags(text):
    return set(re.findall(r"(?<![\w-])(--[a-z][\w-]*)", text))


def verb_cases():
    """(app, verb words) for every verb of every app, with each task of a task app."""
    for app in APPS:
        for verb in verbs(app):
            tasks = TASKS.get(app, ()) if verb in (*MODEL_VERBS, "play") else ()
            for task in tasks or (None,):
                yield app, [verb] + (["--task", task] if task else [])


def test_the_nine_apps_are_the_ones_this_test_knows():
    assert APPS == ["basics", "classify", "detect", "generative", "rl", "segment", "sequence", "style", "visualize"]


@pytest.mark.parametrize("app", TRAINING_APPS)
def test_every_training_app_has_the_four_verbs(app):
    missing = [verb for verb in MODEL_VERBS if verb not in verbs(app)]
    assert not missing, f"apps.{app} lacks {missing}"


@pytest.mark.parametrize("app", TRAINING_APPS)
def test_train_takes_run_config_strategy_and_seed_and_shows_its_defaults(app):
    for task in TASKS.get(app, (None,)):
        words = ["train"] + (["--task", task] if task else [])
        text = app_help(app, words)
        missing = {"--run", "--config", "--strategy", "--seed"} - flags(text)
        assert not missing, f"apps.{app} {' '.join(words)} lacks {sorted(missing)}"
        assert text.count("default") >= 5, f"apps.{app} {' '.join(words)} --help does not show its defaults"


@pytest.mark.parametrize("app", TRAINING_APPS)
def test_evaluate_export_and_predict_read_the_run_named_by_run(app):
    for verb in ("evaluate", "export", "predict"):
        for task in TASKS.get(app, (None,)):
            words = [verb] + (["--task", task] if task else [])
            assert "--run" in flags(app_help(app, words)), f"apps.{app} {' '.join(words)} lacks --run"


def test_no_verb_of_any_app_has_an_out_flag_and_help_lists_only_its_own_flags():
    problems = []
    for app, words in verb_cases():
        text = app_help(app, words)
        if "--out" in flags(text):
            problems.append(f"apps.{app} {' '.join(words)}: --out (the run folder is --run)")
        if words[0] in ("evaluate", "export", "predict") and {"--epochs", "--learning-rate"} & flags(text):
            problems.append(f"apps.{app} {' '.join(words)}: lists training flags")
    assert not problems, problems


def spelled_export_paths(source):
    """Export paths a module spells itself: os.path.join("saved_models", <more>) or a "saved_models/..." string used
    as a value (a default, an argument); help and description texts may name the folders."""
    tree = ast.parse(source)
    texts = {id(k.value) for node in ast.walk(tree) if isinstance(node, ast.Call)
             for k in node.keywords if k.arg in ("help", "description")}
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "join" and len(node.args) > 1
                and isinstance(node.args[0], ast.Constant) and node.args[0].value == "saved_models"):
            found.append(ast.unparse(node))
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("saved_models/")
              and id(node) not in texts):
            found.append(node.value)
    return found


@pytest.mark.parametrize("app", TRAINING_APPS)
def test_exports_follow_the_one_naming_rule(app):
    """Every export folder comes from core.export.export_folder (saved_models/<app>_<model>): no app spells an
    export path of its own."""
    sources = {}
    for folder, _, files in os.walk(os.path.join(ROOT, "apps", app)):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    sources[os.path.relpath(os.path.join(folder, name), ROOT)] = f.read()
    assert any("export_folder(" in text for text in sources.values()), f"apps.{app} never calls export_folder"
    spelled = [f"{path}: {found}" for path, text in sources.items() for found in spelled_export_paths(text)]
    assert not spelled, spelled


def test_the_naming_check_sees_a_spelled_path_and_not_a_help_text():
    assert spelled_export_paths('os.path.join("saved_models", "segment")\nx = "saved_models/rl/dqn"') == [
        "os.path.join('saved_models', 'segment')", "saved_models/rl/dqn"]
    assert spelled_export_paths('p.add_argument("--x", help="saved_models/classify_vgg/")\n'
                                'export_dir = "saved_models"') == []
