"""Command line: python -m apps.rl {train,evaluate,export,play} --task {dqn,reinforce,mcts} ...
                 python -m apps.rl {bandits,contextual,tabular} [--run DIR] [--seed N] ...

  train --task dqn          Deep Q-Network on Atari or CartPole (--preset); rerun the same command to resume
  train --task reinforce    REINFORCE with a baseline on CartPole
  train --task mcts         AlphaZero in miniature: MCTS + policy-value net, tic-tac-toe self-play
  evaluate --task T         the run's agent at play: returns (dqn, reinforce), W/D/L tables (mcts)
  export --task T           SavedModel + TFLite, parity-checked, in saved_models/rl_<task>/<version>/
  play --task T             the exported TFLite policy in the environment, or at tic-tac-toe (alias: predict)
  bandits                   k-armed testbed: greedy, ε-greedy, softmax, UCB -> PNG
  contextual                LinUCB and contextual ε-greedy vs context-free UCB, ε-greedy -> regret PNG
  tabular                   value/policy iteration, MC control, SARSA, Q-learning on toy-text

Each task's flags: python -m apps.rl train --task T --help. A run folder is runs/rl/<task> unless --run DIR
names another; evaluate and export read its config.json.
"""

import argparse
import os

from core.cli import RUNS, add_config_flags, add_run_flags
from core.errors import UserError, run_cli

EXPORTS = "saved_models"  # core.export.export_folder's root (core.export imports Keras: not before parsing)
TASKS = ("dqn", "reinforce", "mcts")
EXPERIMENTS = {"bandits": "the 10-armed testbed; PNG of reward and %% optimal action",
               "contextual": "contextual bandits: LinUCB, contextual ε-greedy vs context-free UCB and ε-greedy; "
                             "PNG of cumulative regret and %% optimal arm",
               "tabular": "planning and learning on FrozenLake, CliffWalking, Taxi; tabular.json"}


def task_of(argv):
    """The --task the command names (else the task recorded in its --config file, else dqn): it decides
    which flags `train`, `evaluate`, `export` and `play` take, so it is read before the full parser is built."""
    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument("--task", choices=TASKS)
    peek.add_argument("--config")
    known, _ = peek.parse_known_args(argv)
    if known.task:
        return known.task
    if known.config and os.path.isfile(known.config):
        from core.training import read_json_object

        recorded = read_json_object(known.config, "config (a JSON object)").get("task")
        if recorded in TASKS:
            return recorded
    return "dqn"


def config_class(task):
    if task == "dqn":
        from apps.rl.dqn.config import DQNConfig
        return DQNConfig
    from apps.rl.config import MCTSConfig, ReinforceConfig
    return {"reinforce": ReinforceConfig, "mcts": MCTSConfig}[task]


def add_task(parser, task, choices=TASKS):
    parser.add_argument("--task", choices=choices, default=task,
                        help=f"{', '.join(choices)}; the flags below are {task}'s "
                             f"(see --task NAME --help for another's; default: {task})")


def add_run_folder(parser, task):
    parser.add_argument("--run", default=None, metavar="DIR",
                        help=f"the run folder (default: {os.path.join(RUNS, 'rl', task)})")


def add_train(commands, task):
    p = commands.add_parser("train", help="train a task's agent (DQN: or resume, with the same command)")
    add_task(p, task)
    add_config_flags(p, config_class(task), title=f"{task} settings ({config_class(task).__name__})")
    add_run_flags(p, app="rl", default_run=os.path.join(RUNS, "rl", task))  # --run, --config, --strategy
    if task == "dqn":
        from apps.rl.dqn.config import PRESETS

        p.add_argument("--preset", default="pong", metavar="NAME",
                       help=f"{', '.join(PRESETS)}: the settings the flags start from (default: pong)")
        p.add_argument("--frames", type=int, default=None,
                       help="total budget in Atari frames, = 4 x --steps (default: none)")
        p.add_argument("--budget-steps", type=int, default=None,
                       help="stop this sitting after this many more agent steps, rerun to resume (default: none)")
    if task == "mcts":
        p.add_argument("--small", action="store_true", help="a short run (seconds): fewer rounds, games, "
                       "simulations and epochs; typed flags still win (default: off)")


def add_evaluate(commands, task):
    from apps.rl import options

    p = commands.add_parser("evaluate", help="the trained agent at play; results (and PNG/GIF) in the run folder")
    add_task(p, task)
    add_run_folder(p, task)
    add_config_flags(p, {"dqn": options.DQNEvaluate, "reinforce": options.ReinforceEvaluate,
                         "mcts": options.MCTSEvaluate}[task])


def add_export(commands, task):
    p = commands.add_parser("export", help="SavedModel + TFLite of the trained policy, parity-checked")
    add_task(p, task)
    add_run_folder(p, task)
    p.add_argument("--export-dir", default=None, metavar="DIR",
                   help=f"the export folder, versions inside (default: {EXPORTS}/rl_{task})")
    p.add_argument("--version", type=int, default=None, help="version number (default: the next one)")


def add_play(commands, task):
    from apps.rl import options

    p = commands.add_parser("play", aliases=["predict"],
                            help="the exported TFLite policy: in the environment (dqn, reinforce), at tic-tac-toe "
                                 "(mcts); its results (and DQN's GIF) go to the run folder")
    add_task(p, task)
    p.add_argument("--run", default=None, metavar="DIR",
                   help=f"the run folder play.json (and DQN's play.gif) go to (default: {RUNS}/rl/{task})")
    p.add_argument("--tflite", default=None, metavar="FILE",
                   help="a .tflite file (default: the newest export's float.tflite in --export-dir)")
    p.add_argument("--export-dir", default=None, metavar="DIR",
                   help=f"the export folder (default: {EXPORTS}/rl_{task})")
    add_config_flags(p, {"dqn": options.DQNPlay, "reinforce": options.ReinforcePlay, "mcts": options.MCTSPlay}[task])


def add_experiments(commands):
    from apps.rl import options

    for name, help_text in EXPERIMENTS.items():
        p = commands.add_parser(name, help=help_text)
        add_config_flags(p, getattr(options, name.capitalize()))
        p.add_argument("--run", default=os.path.join(RUNS, "rl", name), metavar="DIR",
                       help="the folder its PNG or report goes to (default: %(default)s)")


def parse_args(argv=None):
    import sys

    argv = sys.argv[1:] if argv is None else list(argv)
    task = task_of(argv)
    parser = argparse.ArgumentParser(prog="python -m apps.rl", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    add_train(commands, task)
    add_evaluate(commands, task)
    add_export(commands, task)
    add_play(commands, task)
    add_experiments(commands)
    args = parser.parse_args(argv)
    args.command = "play" if args.command == "predict" else args.command
    check_preset(args)
    return args


def check_preset(args):
    from apps.rl.dqn.config import PRESETS

    if getattr(args, "preset", None) is not None and args.preset not in PRESETS:
        raise UserError(f"unknown preset '{args.preset}'; choose one of: {', '.join(PRESETS)}")


def main(argv=None):
    from apps.rl import experiments, verbs

    args = parse_args(argv)
    if args.command in EXPERIMENTS:
        return getattr(experiments, args.command)(args)
    return getattr(verbs, f"{args.command}_{args.task}")(args)


if __name__ == "__main__":
    run_cli(main, prog="apps.rl")
