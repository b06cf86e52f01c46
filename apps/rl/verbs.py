"""What each verb of `python -m apps.rl` does, once its flags are parsed (apps/rl/__main__.py): `<verb>_<task>`
for train, evaluate, export and play, and the experiments bandits, contextual and tabular. The settings come
from the dataclasses (apps/rl/config.py, apps/rl/dqn/config.py, apps/rl/options.py) through
`core.cli.resolve_config`; evaluate and export read the rest from the run's config.json."""

import dataclasses
import json
import os

from core.cli import resolve_config, run_folder
from core.errors import UserError


def dqn_run(args):
    return run_folder("rl", "dqn", args.run)


def export_dir(args):
    """--export-dir, else saved_models/rl_<task> (core.export.export_folder)."""
    from core.export import export_folder

    return args.export_dir or export_folder("rl", args.task)


def newest_tflite(args):
    """--tflite, else the float.tflite of the newest version in --export-dir."""
    if args.tflite is not None:
        return args.tflite
    from core import export as core_export

    folder = export_dir(args)
    version = os.path.basename(core_export.latest_version_dir(folder))
    return os.path.join(folder, "tflite", version, "float.tflite")


def print_folder(run, contents, png):
    print(f"run folder: {run} ({contents})")
    print(f"PNG: {os.path.join(run, png)}")


# -- DQN ------------------------------------------------------------------------------------------------------

def train_dqn(args):
    from apps.rl.dqn.config import PRESETS, DQNConfig

    config = resolve_config(DQNConfig, args, base=PRESETS[args.preset])  # defaults < preset < --config < flags
    if args.frames is not None:
        if "steps" in vars(args):
            raise UserError("give the budget as --steps or as --frames, not both")
        if args.frames < 4:
            raise UserError(f"--frames must be at least 4 (one agent step), got {args.frames}")
        config = dataclasses.replace(config, steps=args.frames // 4)
    if args.budget_steps is not None and args.budget_steps < 1:
        raise UserError(f"--budget-steps must be at least 1, got {args.budget_steps}")
    from apps.rl import dqn

    run = dqn_run(args)
    dqn.train(config, run, strategy=args.strategy, stop_after=args.budget_steps)
    print_folder(run, "config.json, checkpoints/, train.csv, episodes.csv, logs/", "returns.png")


def evaluate_dqn(args):
    from apps.rl import dqn
    from apps.rl.options import DQNEvaluate

    options = resolve_config(DQNEvaluate, args)
    report = dqn.evaluate(dqn_run(args), episodes=options.episodes, epsilon=options.epsilon, seed=options.seed,
                          max_steps=options.max_steps, render=options.render)
    for key in ("gif", "strip"):
        if key in report:
            print(f"{'GIF' if key == 'gif' else 'PNG'}: {report[key]}")


def export_dqn(args):
    from apps.rl import dqn

    dqn.export(dqn_run(args), export_dir=export_dir(args), version=args.version)


def save_play(args, result):
    """play.json in the run folder: what `play` found (the TFLite file, the results)."""
    from core.checkpoints import write_json_atomically
    from core.training import make_output_dir

    path = os.path.join(make_output_dir(run_folder("rl", args.task, args.run)), "play.json")
    write_json_atomically(path, dict(result, tflite=newest_tflite(args)))
    print(f"results: {path}")


def play_dqn(args):
    from apps.rl import dqn
    from apps.rl.options import DQNPlay

    options = resolve_config(DQNPlay, args)
    gif = os.path.join(run_folder("rl", "dqn", args.run), "play.gif") if options.gif else None
    result = dqn.play(newest_tflite(args), episodes=options.episodes, epsilon=options.epsilon, seed=options.seed,
                      max_steps=options.max_steps, gif=gif, env_id=options.env)
    save_play(args, result)


# -- REINFORCE ------------------------------------------------------------------------------------------------

def train_reinforce(args):
    from apps.rl.config import ReinforceConfig, single_device

    config = resolve_config(ReinforceConfig, args)
    single_device(args.strategy)  # a refused strategy: one line, before TensorFlow loads
    from apps.rl import reinforce

    run = run_folder("rl", "reinforce", args.run)
    policy, returns, _ = reinforce.train(config, run=run, strategy=args.strategy)
    print(f"mean return of the last 50 training episodes: {returns[-50:].mean():.1f}; "
          f"greedy policy over 10 episodes: {reinforce.greedy_return(policy, env_id=config.env):.1f}")
    print_folder(run, "config.json, model.keras, episodes.csv", "returns.png")


def evaluate_reinforce(args):
    from apps.rl.options import ReinforceEvaluate

    options = resolve_config(ReinforceEvaluate, args)
    from apps.rl import reinforce

    run = run_folder("rl", "reinforce", args.run)
    config, policy = reinforce.load_policy(run)
    mean = reinforce.greedy_return(policy, env_id=config["env"], episodes=options.episodes, seed=options.seed)
    path = os.path.join(run, "evaluation.json")
    with open(path, "w") as f:
        json.dump(dict(env=config["env"], episodes=options.episodes, seed=options.seed, greedy_mean_return=mean), f,
                  indent=2)
    from core import results

    results.write_results(run, app="rl", model="reinforce", dataset=config["env"],
                          split=f"{options.episodes} greedy episodes", metrics={"greedy_mean_return": mean},
                          budget=results.budget_of(config), seed=options.seed)
    print(f"greedy policy on {config['env']}: mean return {mean:.1f} over {options.episodes} episodes")
    print(f"report: {path}")


def play_reinforce(args):
    from apps.rl.options import ReinforcePlay

    options = resolve_config(ReinforcePlay, args)
    from apps.rl import reinforce

    save_play(args, reinforce.play(newest_tflite(args), episodes=options.episodes, seed=options.seed,
                                   max_steps=options.max_steps, env_id=options.env))


def export_reinforce(args):
    from apps.rl import reinforce

    config, policy = reinforce.load_policy(run_folder("rl", "reinforce", args.run))
    reinforce.export(policy, export_dir=export_dir(args), version=args.version, env_id=config["env"])


# -- AlphaZero in miniature (MCTS) ----------------------------------------------------------------------------

def train_mcts(args):
    from apps.rl.config import MCTS_SMALL, MCTSConfig

    config = resolve_config(MCTSConfig, args, base=MCTS_SMALL if args.small else None)
    from apps.rl import alphazero

    run = run_folder("rl", "mcts", args.run)
    alphazero.train(config, run=run, strategy=args.strategy)
    print_folder(run, "config.json, model.keras, history.csv", "learning_curve.png")


def evaluate_mcts(args):
    from apps.rl.options import MCTSEvaluate

    options = resolve_config(MCTSEvaluate, args)
    from apps.rl import alphazero

    _, png = alphazero.evaluate(run_folder("rl", "mcts", args.run), games=options.games,
                                simulations=options.simulations, seed=options.seed)
    print(f"PNG: {png}")


def export_mcts(args):
    from apps.rl import alphazero

    alphazero.export(run_folder("rl", "mcts", args.run), export_dir=export_dir(args), version=args.version)


def play_mcts(args):
    from apps.rl.options import MCTSPlay

    options = resolve_config(MCTSPlay, args)
    from apps.rl import alphazero

    results = alphazero.play(newest_tflite(args), opponent=options.opponent, ai_first=not options.second,
                             games=options.games, simulations=options.simulations, seed=options.seed)
    save_play(args, dict(opponent=options.opponent, network_first=not options.second, results=results))
