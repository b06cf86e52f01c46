"""The rl command line: `python -m apps.rl {train,evaluate,export,play} --task {dqn,reinforce,mcts}` and the
experiment verbs, on the app contract (docs/CONVENTIONS.md): each verb's help, --config reruns, a run folder
of another task, seeds, and `train` under MirroredStrategy on two logical CPUs."""

import csv
import json
import os

import pytest

from apps.rl.__main__ import main, parse_args
from core.errors import UserError, run_cli
from tests.conftest import run_python

REINFORCE_TINY = ["train", "--task", "reinforce", "--episodes", "2", "--batch-episodes", "2", "--hidden", "8"]


def help_of(argv, capsys):
    with pytest.raises(SystemExit):
        parse_args(argv + ["--help"])
    return capsys.readouterr().out


@pytest.mark.parametrize("argv, own, foreign", [
    (["train"], ["--preset", "--jit", "--budget-steps", "--strategy", "--config", "--run",
                 "(default: ALE/Pong-v5)", "(default: 2000000)"], ["--small", "--episodes"]),
    (["train", "--task", "mcts"], ["--small", "--c-puct", "(default: 1.5)", "--strategy"], ["--preset", "--env"]),
    (["train", "--task", "reinforce"], ["--batch-episodes", "--no-baseline", "(default: 300)", "--strategy"],
     ["--preset", "--small", "--games"]),
    (["evaluate", "--task", "dqn"], ["--episodes", "(default: 0.05)", "--no-render", "(default: runs/rl/dqn)"],
     ["--strategy", "--config", "--learning-rate", "--export-dir", "--preset"]),
    (["evaluate", "--task", "mcts"], ["--games", "(default: 100)", "(default: runs/rl/mcts)"],
     ["--strategy", "--preset", "--iterations"]),
    (["export", "--task", "reinforce"], ["--export-dir", "saved_models/rl_reinforce", "--version"],
     ["--strategy", "--episodes", "--seed"]),
    (["play", "--task", "mcts"], ["--opponent", "(default: human)", "saved_models/rl_mcts", "(default: runs/rl/mcts)"],
     ["--strategy", "--epsilon"]),
    (["predict", "--task", "dqn"], ["--epsilon", "(default: 7)", "saved_models/rl_dqn", "--no-gif"],
     ["--strategy", "--games"]),
    (["predict", "--task", "reinforce"], ["--episodes", "(default: 3)", "saved_models/rl_reinforce"],
     ["--strategy", "--epsilon", "--games"]),
    (["bandits"], ["--arms", "(default: 10)", "(default: runs/rl/bandits)", "--seed"], ["--out", "--strategy"]),
    (["tabular"], ["--algorithms", "(default: runs/rl/tabular)", "--seed"], ["--out", "--arms"]),
])
def test_each_verb_help_lists_its_own_flags_with_defaults(argv, own, foreign, capsys):
    text = " ".join(help_of(argv, capsys).split())
    for flag in own:
        assert flag in text, (flag, text)
    for flag in foreign:
        assert flag not in text, (flag, text)


def test_help_and_parsing_do_not_import_tensorflow():
    result = run_python(["-c", "import sys; from apps.rl.__main__ import parse_args; "
                               "parse_args(['train', '--task', 'mcts', '--small']); parse_args(['export']); "
                               "print('tensorflow' in sys.modules, 'keras' in sys.modules)"], timeout=60)
    assert result.returncode == 0 and result.stdout.split() == ["False", "False"], result.stderr[-2000:]


def test_train_config_reruns_the_experiment_and_another_task_run_is_refused(tmp_path, capsys):
    first, second = str(tmp_path / "a"), str(tmp_path / "b")
    main(REINFORCE_TINY + ["--gamma", "0.9", "--no-baseline", "--seed", "3", "--run", first])
    recorded = json.load(open(os.path.join(first, "config.json")))
    assert recorded["task"] == "reinforce" and recorded["gamma"] == 0.9 and recorded["baseline"] is False
    # no --task: the task comes from the config file, every setting from it, the typed --seed wins
    main(["train", "--config", os.path.join(first, "config.json"), "--seed", "4", "--run", second])
    rerun = json.load(open(os.path.join(second, "config.json")))
    assert rerun == dict(recorded, seed=4)
    with open(os.path.join(first, "episodes.csv")) as a, open(os.path.join(second, "episodes.csv")) as b:
        assert len(list(csv.reader(a))) == len(list(csv.reader(b))) == 3
    for argv in (["train", "--task", "mcts", "--small", "--run", first],
                 ["train", "--task", "dqn", "--preset", "cartpole", "--run", first],
                 ["evaluate", "--task", "mcts", "--run", first]):
        with pytest.raises(UserError, match="--run") as error:
            main(argv)
        assert "\n" not in str(error.value) and "reinforce" in str(error.value)


@pytest.mark.parametrize("argv", [["train", "--task", "reinforce", "--seed", "-1"],
                                  ["train", "--task", "mcts", "--seed", "-1"],
                                  ["evaluate", "--task", "dqn", "--seed", "-1"],
                                  ["bandits", "--seed", "-1"]])
def test_a_negative_seed_is_one_line_and_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, argv, prog="apps.rl")
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and err == ["apps.rl: error: the command line: --seed must be at least 0, got -1"]


def test_reinforce_refuses_mirrored_in_one_line_saying_why(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, REINFORCE_TINY + ["--strategy", "mirrored", "--run", str(tmp_path)], prog="apps.rl")
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and "one device" in err[0], err


MIRRORED_MCTS = """
import csv, json, sys
from core import distribute
distribute.split_cpu(2)
from apps.rl.__main__ import main

tiny = ["train", "--task", "mcts", "--iterations", "1", "--games", "2", "--simulations", "4", "--epochs", "2",
        "--hidden", "16"]
for strategy in ("mirrored", "default"):
    main(tiny + ["--strategy", strategy, "--run", f"{sys.argv[1]}/{strategy}"])
"""


def test_mcts_train_under_mirrored_on_two_cpus_equals_one_device(tmp_path):
    """The real `train --task mcts` (self-play, then `fit` on 128 examples in batches of 64) under
    MirroredStrategy over two logical CPUs, and on one device: the same seed gives the same self-play (an
    untrained net, the same weights), and each step's gradient is the sum of the two half-batch gradients,
    equal to the one-device gradient up to float32 summation order (~1e-7 relative; Adam's 4 steps keep that
    scale); the losses after training agree to 1e-5, far below a step's change of the loss (~1e-2)."""
    result = run_python(["-c", MIRRORED_MCTS, str(tmp_path)], timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    rows, configs = {}, {}
    for strategy in ("mirrored", "default"):
        with open(tmp_path / strategy / "history.csv") as f:
            rows[strategy] = list(csv.DictReader(f))[-1]
        configs[strategy] = json.load(open(tmp_path / strategy / "config.json"))
    assert configs["mirrored"]["replicas"] == 2 and configs["default"]["replicas"] == 1
    assert int(rows["mirrored"]["examples"]) == int(rows["default"]["examples"]) > 64
    for loss in ("policy_loss", "value_loss"):
        assert float(rows["mirrored"][loss]) == pytest.approx(float(rows["default"][loss]), rel=1e-5, abs=1e-6)


MIRRORED_DQN = """
import sys
from core import distribute
distribute.split_cpu(2)
from apps.rl.__main__ import main

main(["train", "--task", "dqn", "--preset", "cartpole", "--steps", "16", "--num-envs", "2", "--buffer-size", "64",
      "--batch-size", "2", "--learning-starts", "8", "--log-every", "8", "--checkpoint-every", "16",
      "--strategy", "mirrored", "--run", sys.argv[1]])
"""


@pytest.mark.slow  # a second TensorFlow process (~40 s of CPU); the update's equality is tests/test_rl_dqn.py's
def test_dqn_train_runs_under_mirrored_on_two_cpus(tmp_path):
    """The real `train --task dqn` loop under MirroredStrategy (the update's equality with one replica is
    tests/test_rl_dqn.py's): it learns (4 updates of a global batch of 4) and the run records 2 replicas."""
    run = str(tmp_path / "dqn")
    result = run_python(["-c", MIRRORED_DQN, run], timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 replica(s), global batch 4" in result.stdout
    assert json.load(open(os.path.join(run, "config.json")))["replicas"] == 2
    with open(os.path.join(run, "train.csv")) as f:
        assert int(list(csv.DictReader(f))[-1]["updates"]) == 4
