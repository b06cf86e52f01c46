"""Every CLI's bad-input paths: one line on stderr that names the problem, a non-zero exit, no traceback.

Two tables. REAL_PROCESS_CASES run `python -m <module> ...` as a user would;
they are inputs rejected before TensorFlow loads, so each process costs well
under a second. IN_PROCESS_CASES need TensorFlow (a model to load, a dataset
to read); they go through the same `run_cli(main, argv, prog)` the modules'
`__main__` blocks call, inside this test process, which has TensorFlow loaded
once for all of them. "Full disk" is simulated by an output folder under a
regular file: the tests may run as root, which ignores permission bits.
"""

import json
import os
import re

import numpy as np
import pytest

from conftest import ROOT, run_python
from core.errors import run_cli

# TensorFlow's C++ start-up lines are not the program's output.
TF_NOISE = ("WARNING: All log messages before absl::InitializeLog()", "I0000 ", "E0000 ", "W0000 ",
            "To enable the following instructions")


def error_lines(stderr):
    return [line for line in stderr.strip().splitlines() if line.strip() and not line.startswith(TF_NOISE)]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Bad inputs on disk, plus a classify run folder (untrained LeNet-5, real files) and a tiny .tflite."""
    import keras

    from apps.classify.models import build_model
    from core import export

    root = tmp_path_factory.mktemp("bad_inputs")
    paths = {"root": str(root), "missing": str(root / "missing"), "empty": str(root / "empty")}
    os.mkdir(paths["empty"])
    paths["file"] = str(root / "notes.txt")
    open(paths["file"], "w").write("a regular file: no folder can be made under it")
    paths["unwritable"] = os.path.join(paths["file"], "out")
    paths["not_npy"] = str(root / "not_an_array.npy")
    open(paths["not_npy"], "w").write("hello")
    paths["config"] = str(root / "models.config")
    open(paths["config"], "w").write("model_config_list {}")

    run = root / "run"
    run.mkdir()
    keras.utils.set_random_seed(0)
    build_model("lenet5", (28, 28, 1), 10).save(run / "model.keras")
    config = dict(app="classify", model="lenet5", dataset="fashion_mnist", val_fraction=0.1, seed=0, limit=None,
                  class_names=[str(i) for i in range(10)], image_shape=[28, 28, 1])
    (run / "config.json").write_text(json.dumps(config))
    paths["run"] = str(run)
    corrupt = root / "corrupt_run"
    corrupt.mkdir()
    (corrupt / "config.json").write_text(json.dumps(config))
    (corrupt / "model.keras").write_bytes(b"PK\x03\x04 cut short by a kill")
    paths["corrupt_run"] = str(corrupt)

    dense = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    export.export_saved_model(dense, str(root / "dense"), ["x"], ["y"])
    paths["tflite"] = export.convert_to_tflite(str(root / "dense"), str(root / "dense.tflite"))
    np.save(root / "wrong_shape.npy", np.zeros((2, 5), np.float32))
    np.save(root / "strings.npy", np.array([["a", "b", "c"]]))
    paths["wrong_shape"], paths["strings"] = str(root / "wrong_shape.npy"), str(root / "strings.npy")
    return paths


# (module, argv, words the error must contain). {name} is a path from the `files` fixture.
REAL_PROCESS_CASES = [
    ("apps.classify", ["train", "--epochs", "many"], "argument --epochs: invalid int value: 'many'"),
    ("apps.classify", ["train", "--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    ("apps.classify", ["train", "--epochs", "0"], "--epochs must be at least 1, got 0"),
    ("apps.classify", ["train", "--seed", "-1"], "--seed must be at least 0, got -1"),
    ("apps.basics", ["perceptrons"], "invalid choice: 'perceptrons'"),
    ("apps.visualize", ["saliency", "--count", "0"], "--count must be at least 1, got 0"),
    ("apps.visualize", ["tsne", "--perplexity", "-1"], "--perplexity must be positive"),
    ("apps.style", ["transfer", "--size", "8"], "--size must be at least 16"),
    ("apps.style", ["train", "--batch-size", "0"], "--batch-size must be at least 1"),
    ("apps.generative", ["train", "--model", "vae2"], "argument --model: invalid choice: 'vae2'"),
    ("apps.generative", ["train", "--domains", "7"], "--domains needs two classes (A B, like 7 9), got 1: 7"),
    ("apps.generative", ["train", "--seed", "-1"], "--seed must be at least 0, got -1"),
    ("apps.generative", ["sample", "--seed", "-1"], "--seed must be at least 0, got -1"),
    ("apps.rl", ["tabular", "--algorithms", "q_learnin"], "unknown tabular algorithm 'q_learnin'"),
    ("apps.sequence", ["train", "--task", "poetry"], "argument --task: invalid choice: 'poetry'"),
    ("apps.detect", ["detection"], "invalid choice: 'detection'"),
    ("apps.segment", ["segmentation"], "invalid choice: 'segmentation'"),
    ("serving", ["serve", "--config", "{missing}"], "missing not found; run `python -m serving config`"),
    ("serving", ["serve", "--config", "{config}", "--rest-port", "70000"],
     "--rest-port must be a port number 0-65535, got 70000"),
    ("serving", ["client", "--model", "classify", "--npy", "{not_npy}"], "cannot read"),
    ("serving", ["client", "--model", "classify", "--image", "{missing}"], "image not found"),
    ("serving", ["tflite", "--limit", "0"], "--limit and --latency-runs must be at least 1"),
    ("serving", ["tflite-run", "{missing}"], "model file not found"),
    ("core.tflite_run", ["{file}"], "cannot load"),
    ("core.tflite_run", ["{tflite}", "{wrong_shape}"], "has shape [2, 5], the model expects [-1, 3]"),
]


@pytest.mark.parametrize("module, argv, message", REAL_PROCESS_CASES,
                         ids=[f"{m} {' '.join(a)}" for m, a, _ in REAL_PROCESS_CASES])
def test_cli_rejects_bad_input_in_a_real_process(files, module, argv, message):
    result = run_python(["-m", module, *[a.format(**files) for a in argv]], timeout=120)
    assert result.returncode == 2, (result.returncode, result.stderr[-1500:])
    assert "Traceback" not in result.stderr, result.stderr[-1500:]
    lines = error_lines(result.stderr)
    prog = {"core.tflite_run": "tflite-run"}.get(module, module)
    # Ours: "apps.x: error: ..."; argparse's: "python -m apps.x [subcommand]: error: ..." under its usage.
    assert re.match(rf"^(python -m )?{re.escape(prog)}( [\w-]+)*: error: ", lines[-1]), lines
    assert message in lines[-1], lines
    if not lines[0].startswith("usage:"):  # not argparse (which prints its usage first): the only line
        assert len(lines) == 1, lines


def _main(module):
    import importlib

    return importlib.import_module(f"{module}.__main__").main


IN_PROCESS_CASES = [
    # classify
    ("apps.classify", ["train", "--model", "lenet5", "--dataset", "digits", "--limit", "100", "--run", "{unwritable}"],
     "cannot write to the output folder"),
    ("apps.classify", ["predict", "{tflite}", "--saved-model", "{empty}"], "not a SavedModel folder"),
    ("apps.classify", ["evaluate", "--run", "{corrupt_run}"], "cannot load"),
    # basics
    ("apps.basics", ["perceptron", "--small", "--run", "{unwritable}"], "cannot write to the output folder"),
    ("apps.basics", ["numerics", "--seed", "-1"], "--seed must be an integer >= 0, got -1"),
    # visualize
    ("apps.visualize", ["saliency", "--run", "{missing}"], "classifier not found"),
    ("apps.visualize", ["activations", "--run", "{run}", "--layer", "conv9"], "conv9"),
    ("apps.visualize", ["kernels", "--run", "{corrupt_run}"], "cannot load"),
    ("apps.visualize", ["saliency", "--run", "{run}", "--images", "{missing}"], "not found"),
    ("apps.visualize", ["saliency", "--run", "{run}", "--images", "{file}"], "cannot read"),
    ("apps.visualize", ["kernels", "--run", "{run}", "--figures", "{unwritable}"], "cannot write to the output folder"),
    # style
    ("apps.style", ["transfer", "--content", "{missing}", "--steps", "1"], "image not found"),
    ("apps.style", ["transfer", "--style", "no_such_photo", "--steps", "1"], "image not found: no_such_photo"),
    ("apps.style", ["evaluate", "--run", "{missing}"], "no training run in"),
    ("apps.style", ["train", "--size", "30", "--run", "{root}/style"], "--size must be a multiple of 4"),
    ("apps.style", ["transfer", "--steps", "1", "--size", "16", "--run", "{unwritable}"],
     "cannot write to the output folder"),
    ("apps.style", ["transfer", "--features", "vgg19", "--weights", "{missing}", "--steps", "1"],
     "VGG19 weights not found"),
    # generative
    ("apps.generative", ["evaluate", "--run", "{missing}"], "no training run in"),
    ("apps.generative", ["train", "--model", "vae", "--dataset", "digits", "--limit", "64", "--run", "{unwritable}"],
     "cannot write to the output folder"),
    ("apps.generative", ["train", "--dataset", "imagenet", "--run", "{root}/gen"], "unknown dataset 'imagenet'"),
    # rl
    ("apps.rl", ["train", "--preset", "pacman"], "unknown preset 'pacman'"),
    ("apps.rl", ["evaluate", "--task", "dqn", "--run", "{missing}"], "no DQN run in"),
    ("apps.rl", ["play", "--task", "dqn", "--tflite", "{missing}"], "no such TFLite file"),
    ("apps.rl", ["train", "--task", "mcts", "--games", "0"], "--games must be at least 1"),
    ("apps.rl", ["evaluate", "--task", "mcts", "--run", "{missing}"], "no training run in"),
    ("apps.rl", ["play", "--task", "mcts", "--tflite", "{missing}", "--opponent", "random"], "no such TFLite file"),
    ("apps.rl", ["contextual", "--env", "bandit"], "unknown contextual environment 'bandit'"),
    ("apps.rl", ["bandits", "--arms", "0", "--runs", "2", "--steps", "5", "--run", "{root}/bandits"], "--arms"),
    ("apps.rl", ["train", "--task", "reinforce", "--seed", "-1"], "--seed must be at least 0, got -1"),
    # sequence
    ("apps.sequence", ["evaluate", "--task", "charlm", "--run", "{missing}"], "no training run in"),
    ("apps.sequence", ["predict", "--task", "charlm", "The", "--run", "{missing}"], "no training run in"),
    ("apps.sequence", ["train", "--task", "textclass", "--epochs", "0", "--run", "{root}/tc"], "--epochs must be at"),
    ("apps.sequence", ["train", "--task", "dates", "--seed", "-1", "--run", "{root}/dates"], "--seed must be at"),
    ("apps.sequence", ["predict", "--task", "dates", "1 May 2020", "--run", "{missing}"], "no training run in"),
    ("apps.sequence", ["predict", "--task", "textclass", "hello", "--run", "{corrupt_run}"], ""),
    # serving and the TFLite runner
    ("serving", ["config", "--root", "{empty}"], "no exported app under"),
    ("serving", ["tflite-run", "{tflite}", "{strings}"], "float32"),
    ("serving", ["tflite-run", "{tflite}", "--input", "z={wrong_shape}"], "unknown input 'z'"),
]


def _case_id(case):
    values = case.values if hasattr(case, "values") else case
    return f"{values[0]} {' '.join(values[1])}"


@pytest.mark.parametrize("module, argv, message", IN_PROCESS_CASES, ids=[_case_id(c) for c in IN_PROCESS_CASES])
def test_cli_rejects_bad_input(files, capsys, module, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(_main(module), [a.format(**files) for a in argv], prog=module)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2, err
    lines = error_lines(err)
    assert len(lines) == 1 and lines[0].startswith(f"{module}: error: "), lines
    assert message in lines[0], lines


def test_the_error_table_covers_every_cli():
    """A new app (or a renamed one) must add its bad inputs here."""
    apps = {f"apps.{name}" for name in os.listdir(os.path.join(ROOT, "apps"))
            if os.path.exists(os.path.join(ROOT, "apps", name, "__main__.py"))}
    covered = {case[0] for case in REAL_PROCESS_CASES} | {_case_id(c).split()[0] for c in IN_PROCESS_CASES}
    assert apps | {"serving", "core.tflite_run"} <= covered, sorted(apps - covered)
