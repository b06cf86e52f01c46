"""The README's commands run as written: every `python -m apps.…` line names a real verb and real flags, every
`make` line is a target whose recipe does too (`make -n`), and the classification walk-through runs verbatim
from a fresh folder (with a one-epoch budget appended to `train`): `train` once, then `evaluate`, then `export` and
`predict`."""

import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
from cli_help import check_command

from conftest import ROOT


def readme_commands():
    """The shell lines of the README's ```sh blocks (continuation lines joined, comments dropped)."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        blocks = re.findall(r"```sh\n(.*?)```", f.read(), flags=re.S)
    lines = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line:
                lines.append(line)
    return lines


def python_words(line):
    """(module, arguments) of a `python -m apps.X ...` line, whatever the interpreter path or env prefix."""
    words = shlex.split(line)
    start = next(i for i, w in enumerate(words) if w == "-m")
    return words[start + 1], words[start + 2:]


def check_python_line(line):
    module, arguments = python_words(line)
    problems = check_command([module, *arguments])
    assert not problems, problems


def test_every_readme_command_names_real_verbs_flags_and_make_targets():
    lines = readme_commands()
    assert len(lines) >= 10
    for line in lines:
        if re.search(r"python -m apps\.", line):
            check_python_line(line)
        elif re.match(r"(\w+=\S+ )*make ", line):
            words = shlex.split(line)
            make = words.index("make")
            dry = subprocess.run(["make", "-n", *words[make + 1:]], cwd=ROOT, capture_output=True, text=True,
                                 env=dict(os.environ, **dict(w.split("=", 1) for w in words[:make])))
            assert dry.returncode == 0, f"{line}: {dry.stderr.strip()}"
            for recipe_line in dry.stdout.splitlines():
                if "-m apps." in recipe_line:
                    check_python_line(recipe_line)


def walk_through_lines():
    """The README's classify block: train, evaluate, export, predict (in that order)."""
    block = [line for line in readme_commands() if "-m apps.classify" in line and "multiworker" not in line]
    assert [python_words(line)[1][0] for line in block[:4]] == ["train", "evaluate", "export", "predict"]
    return block[:4]


def run_line(line, folder):
    """One README line as written, run from `folder`; `train` gets a tiny budget appended."""
    module, arguments = python_words(line)
    if arguments[0] == "train":
        arguments += ["--epochs", "1", "--limit", "300"]
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3", MPLBACKEND="Agg")
    done = subprocess.run([sys.executable, "-m", module, *arguments], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, f"{line}: {done.stderr[-2000:]}"
    return done


@pytest.fixture(scope="module")
def walked_folder(tmp_path_factory):
    """A folder with nothing in it but a test image, after the README's `train` line."""
    from PIL import Image

    from core import data

    folder = tmp_path_factory.mktemp("walk_through")
    images = data.load_dataset("fashion_mnist", limit=64)
    image = next(images.test.as_numpy_iterator())[0]
    Image.fromarray(image.astype(np.uint8)[..., 0]).save(folder / "shirt.png")
    run_line(walk_through_lines()[0], folder)
    return folder


def test_the_walk_throughs_evaluate_runs_verbatim_after_its_train(walked_folder):
    done = run_line(walk_through_lines()[1], walked_folder)
    assert "accuracy" in done.stdout


def test_the_walk_throughs_export_and_predict_run_verbatim_after_its_train(walked_folder):
    run_line(walk_through_lines()[2], walked_folder)
    assert any(name.startswith("classify_") for name in os.listdir(walked_folder / "saved_models"))
    done = run_line(walk_through_lines()[3], walked_folder)
    assert "shirt.png" in done.stdout


pytestmark = pytest.mark.filterwarnings("ignore")
