"""Command line: python -m apps.rl {bandits,contextual,tabular,dqn,reinforce,mcts} ...

  bandits                      k-armed testbed: greedy, ε-greedy, softmax, UCB -> PNG
  contextual                   LinUCB and contextual ε-greedy vs context-free UCB, ε-greedy -> regret PNG
  tabular                      value/policy iteration, MC control, SARSA, Q-learning on toy-text
  dqn train|evaluate|export|play   Deep Q-Network on Atari (or CartPole)
  reinforce [--export]         REINFORCE with a baseline on CartPole (--export: SavedModel + TFLite of the policy)
  mcts train|evaluate|export|play  AlphaZero in miniature: MCTS + policy-value net, tic-tac-toe self-play
"""

import argparse
import json
import os

from core.errors import UserError, run_cli

OUT = os.path.join("runs", "rl")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m apps.rl", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("bandits", help="the 10-armed testbed; PNG of reward and %% optimal action")
    p.add_argument("--runs", type=int, default=2000)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--arms", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join(OUT, "bandits"))

    p = commands.add_parser("contextual", help="contextual bandits: LinUCB, contextual ε-greedy vs context-free "
                            "UCB and ε-greedy; PNG of cumulative regret and %% optimal arm")
    p.add_argument("--env", default="all", help="linear, digits or all (default: %(default)s)")
    p.add_argument("--steps", type=int, default=None,
                   help="steps per run (default: 1000 on linear, 2000 on digits; with --small 300 and 500)")
    p.add_argument("--runs", type=int, default=None,
                   help="independent runs (default: 200 on linear, 20 on digits; with --small 50 and 5)")
    p.add_argument("--alpha", type=float, default=0.5, help="LinUCB width factor α (default: %(default)s)")
    p.add_argument("--epsilon", type=float, default=0.1, help="ε of both ε-greedy agents (default: %(default)s)")
    p.add_argument("--small", action="store_true", help="a few seconds instead of half a minute")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join(OUT, "contextual"), help="PNG folder (default: %(default)s)")

    p = commands.add_parser("tabular", help="planning and learning on FrozenLake, CliffWalking, Taxi")
    p.add_argument("--env", default="all", help="frozenlake, cliffwalking, taxi or all (default: %(default)s)")
    p.add_argument("--algorithms", default="all",
                   help="comma list of value_iteration, policy_iteration, mc_control, sarsa, q_learning")
    p.add_argument("--episodes", type=int, default=None, help="episodes for the learning methods")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join(OUT, "tabular"))

    p = commands.add_parser("dqn", help="Deep Q-Network: train, evaluate, export, play")
    verbs = p.add_subparsers(dest="verb", required=True)
    t = verbs.add_parser("train", help="train or resume (rerun the same command after a kill)")
    t.add_argument("--preset", default="pong", help="pong, breakout or cartpole (default: %(default)s)")
    t.add_argument("--env", default=None, help="gymnasium id, overrides the preset (e.g. ALE/Breakout-v5)")
    t.add_argument("--steps", type=int, default=None, help="total agent steps (Atari: 4 frames each)")
    t.add_argument("--frames", type=int, default=None, help="total budget in Atari frames (= 4 x steps)")
    t.add_argument("--budget-steps", type=int, default=None,
                   help="stop this sitting after this many more agent steps (resume later)")
    t.add_argument("--num-envs", type=int, default=None)
    t.add_argument("--buffer-size", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=None, help="per replica")
    t.add_argument("--learning-rate", type=float, default=None)
    t.add_argument("--optimizer", default=None, help="adam or rmsprop")
    t.add_argument("--learning-starts", type=int, default=None)
    t.add_argument("--target-update", type=int, default=None, help="agent steps between target syncs")
    t.add_argument("--eps-decay-steps", type=int, default=None)
    t.add_argument("--train-freq", type=int, default=None)
    t.add_argument("--updates-per-call", type=int, default=None, help="learner updates per tf.function call")
    t.add_argument("--jit-compile", default=None, choices=["on", "off"], help="XLA for the update (one replica)")
    t.add_argument("--double", default=None, choices=["on", "off"])
    t.add_argument("--dueling", default=None, choices=["on", "off"])
    t.add_argument("--log-every", type=int, default=None)
    t.add_argument("--checkpoint-every", type=int, default=None)
    t.add_argument("--async-envs", action="store_true", help="environments in subprocesses")
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--strategy", default="auto", help="auto, default, mirrored or multiworker")
    t.add_argument("--out", default=None, help="run folder (default: runs/rl/dqn/<preset>)")
    e = verbs.add_parser("evaluate", help="ε=0.05 evaluation over whole games; GIF and PNG strip")
    e.add_argument("--out", default=os.path.join(OUT, "dqn", "pong"))
    e.add_argument("--episodes", type=int, default=10)
    e.add_argument("--epsilon", type=float, default=0.05)
    e.add_argument("--max-steps", type=int, default=None, help="cap on agent steps per episode")
    e.add_argument("--no-render", action="store_true")
    x = verbs.add_parser("export", help="SavedModel (frames -> Q-values, action) + TFLite, parity-checked")
    x.add_argument("--out", default=os.path.join(OUT, "dqn", "pong"))
    x.add_argument("--export-dir", default=os.path.join("saved_models", "rl", "dqn"))
    x.add_argument("--version", type=int, default=None)
    y = verbs.add_parser("play", help="run the exported TFLite policy in the environment")
    y.add_argument("--tflite", default=None, help="a .tflite file (default: the newest export's float.tflite)")
    y.add_argument("--export-dir", default=os.path.join("saved_models", "rl", "dqn"))
    y.add_argument("--env", default=None, help="gymnasium id (default: read from the export)")
    y.add_argument("--episodes", type=int, default=1)
    y.add_argument("--epsilon", type=float, default=0.0)
    y.add_argument("--max-steps", type=int, default=None)
    y.add_argument("--gif", default=os.path.join(OUT, "dqn", "play.gif"))

    p = commands.add_parser("reinforce", help="REINFORCE with a baseline on CartPole")
    p.add_argument("--episodes", type=int, default=300)
    p.add_argument("--batch-episodes", type=int, default=8)
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join(OUT, "reinforce"))
    p.add_argument("--export", action="store_true",
                   help="export the trained policy: SavedModel + float and dynamic-range TFLite, parity-checked")
    p.add_argument("--export-dir", default=os.path.join("saved_models", "rl", "reinforce"),
                   help="with --export (default: %(default)s)")
    p.add_argument("--version", type=int, default=None, help="with --export (default: the next one)")

    add_mcts_parser(commands)
    return parser.parse_args(argv)


def add_mcts_parser(commands):
    from apps.rl.alphazero import DEFAULTS, SMALL

    p = commands.add_parser("mcts", help="MCTS + policy-value net on tic-tac-toe: train, evaluate, export, play")
    verbs = p.add_subparsers(dest="verb", required=True)
    run_dir = os.path.join(OUT, "mcts")
    t = verbs.add_parser("train", help="self-play rounds: MCTS with the net -> (board, visits, outcome) -> fit",
                         description="defaults in brackets; --small: " + ", ".join(
                             f"{k}={v}" for k, v in SMALL.items() if DEFAULTS[k] != v))
    for name in ("iterations", "games", "simulations", "epochs", "window", "hidden"):
        t.add_argument(f"--{name}", type=int, default=None, help=f"[{DEFAULTS[name]}]")
    t.add_argument("--c-puct", type=float, default=None, help=f"PUCT exploration c [{DEFAULTS['c_puct']}]")
    t.add_argument("--learning-rate", type=float, default=None, help=f"Adam [{DEFAULTS['learning_rate']}]")
    t.add_argument("--small", action="store_true", help="a short run (seconds): the sizes above")
    t.add_argument("--seed", type=int, default=None, help=f"[{DEFAULTS['seed']}]")
    t.add_argument("--out", default=run_dir, help="run folder (default: %(default)s)")
    e = verbs.add_parser("evaluate", help="MCTS + net, the net alone and plain MCTS vs random and one-ply greedy")
    e.add_argument("--out", default=run_dir, help="run folder (default: %(default)s)")
    e.add_argument("--games", type=int, default=100, help="games on each side per opponent (default: %(default)s)")
    e.add_argument("--simulations", type=int, default=None, help="per move (default: the run's)")
    e.add_argument("--seed", type=int, default=0)
    x = verbs.add_parser("export", help="SavedModel (board -> policy, value) + TFLite, parity-checked")
    x.add_argument("--out", default=run_dir, help="run folder (default: %(default)s)")
    x.add_argument("--export-dir", default=os.path.join("saved_models", "rl", "mcts"),
                   help="(default: %(default)s)")
    x.add_argument("--version", type=int, default=None)
    y = verbs.add_parser("play", help="the exported TFLite net searching with MCTS, against you or a fixed player")
    y.add_argument("--tflite", default=None, help="a .tflite file (default: the newest export's float.tflite)")
    y.add_argument("--export-dir", default=os.path.join("saved_models", "rl", "mcts"),
                   help="(default: %(default)s)")
    y.add_argument("--opponent", default="human", help="human, random or greedy (default: %(default)s)")
    y.add_argument("--second", action="store_true", help="the network plays O (default: it plays X, first)")
    y.add_argument("--games", type=int, default=1, help="(default: %(default)s)")
    y.add_argument("--simulations", type=int, default=100, help="per move (default: %(default)s)")
    y.add_argument("--seed", type=int, default=0)


def run_bandits(args):
    from apps.rl import bandits

    for flag, value in (("--arms", args.arms), ("--runs", args.runs), ("--steps", args.steps)):
        if value < 1:
            raise UserError(f"{flag} must be at least 1 (got {value})")
    results = bandits.compare(arms=args.arms, steps=args.steps, runs=args.runs, seed=args.seed)
    png = bandits.plot(results, os.path.join(args.out, "bandits.png"), args.runs)
    print(f"{'setting':32s} {'reward (last 100)':>18s} {'% optimal (last 100)':>21s}")
    for name, reward, optimal in bandits.summary(results):
        print(f"{name:32s} {reward:18.3f} {optimal:21.1f}")
    print(f"best possible (mean of max q*): {results[0][1]['best_possible']:.3f}")
    print(f"PNG: {png}")


def run_contextual(args):
    from apps.rl import contextual

    environments = list(contextual.ENVIRONMENTS) if args.env == "all" else args.env.split(",")
    for name in environments:
        if name not in contextual.ENVIRONMENTS:
            raise UserError(f"unknown contextual environment '{name}'; choose from: linear, digits, all")
    sizes = {"linear": (300, 50) if args.small else (1000, 200), "digits": (500, 5) if args.small else (2000, 20)}
    for flag, value in (("--steps", args.steps), ("--runs", args.runs)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be at least 1 (got {value})")
    if args.alpha < 0 or not 0 <= args.epsilon <= 1:
        raise UserError(f"--alpha must be ≥ 0 and --epsilon in [0, 1] (got {args.alpha}, {args.epsilon})")
    settings = (("linucb", {"alpha": args.alpha}), ("linear-epsilon", {"epsilon": args.epsilon}),
                ("ucb", {"c": 2.0}), ("epsilon", {"epsilon": args.epsilon}))
    all_results, runs = {}, {}
    for name in environments:
        steps, runs[name] = args.steps or sizes[name][0], args.runs or sizes[name][1]
        results = contextual.compare(name, settings, steps=steps, runs=runs[name], seed=args.seed)
        all_results[name] = results
        print(f"\n{name}: {steps} steps, {runs[name]} runs")
        print(f"{'agent':34s} {'cumulative regret':>18s} {'± s.e.':>8s} {'% optimal (last 100)':>21s}")
        for agent, regret, error, optimal in contextual.summary(results):
            print(f"{agent:34s} {regret:18.1f} {error:8.1f} {optimal:21.1f}")
    png = contextual.plot(all_results, os.path.join(args.out, "contextual.png"), runs)
    print(f"PNG: {png}")


def run_tabular(args):
    from apps.rl import tabular

    envs = list(tabular.ENVIRONMENTS) if args.env == "all" else args.env.split(",")
    algorithms = list(tabular.ALGORITHMS) if args.algorithms == "all" else args.algorithms.split(",")
    for name in algorithms:
        if name not in tabular.ALGORITHMS:
            raise UserError(f"unknown tabular algorithm '{name}'; choose from: {', '.join(tabular.ALGORITHMS)}")
    os.makedirs(args.out, exist_ok=True)
    report = {}
    for env_name in envs:
        env, gamma = tabular.make(env_name)
        optimal = tabular.value_iteration(env, gamma)
        print(f"\n== {env_name} (γ={gamma}): optimal value of the start = "
              f"{tabular.start_states(env) @ optimal['V']:.4f}")
        for algorithm in algorithms:
            overrides = {"episodes": args.episodes} if args.episodes and algorithm not in (
                "value_iteration", "policy_iteration") else {}
            result = tabular.learn(env_name, algorithm, seed=args.seed, **overrides)
            check = tabular.compare_to_optimal(env, result["policy"], optimal, gamma)
            check["greedy_mean_return"] = tabular.greedy_return(env, result["policy"], episodes=200, seed=args.seed)
            report[f"{env_name}/{algorithm}"] = check
            print(f"-- {algorithm}: optimal actions in {100 * check['optimal_action_share']:.0f}% of the states "
                  f"where it matters; V^π(start) = {check['start_value']:.4f} "
                  f"(optimal {check['optimal_start_value']:.4f}); greedy return {check['greedy_mean_return']:.3f}")
            print(tabular.policy_grid(env_name, env, result["policy"]))
    path = os.path.join(args.out, "tabular.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    print(f"\nreport: {path}")


def dqn_config(args):
    from apps.rl import dqn

    if args.preset not in dqn.PRESETS:
        raise UserError(f"unknown preset '{args.preset}'; choose one of: {', '.join(dqn.PRESETS)}")
    values = dict(dqn.PRESETS[args.preset])
    if args.frames is not None:
        values["steps"] = args.frames // 4
    for key in ("env", "steps", "num_envs", "buffer_size", "batch_size", "learning_rate", "optimizer",
                "learning_starts", "target_update", "eps_decay_steps", "train_freq", "updates_per_call", "log_every",
                "checkpoint_every", "seed"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    for key in ("double", "dueling", "jit_compile"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key) == "on"
    if args.async_envs:
        values["async_envs"] = True
    return dqn.DQNConfig.from_dict(values)


def run_dqn(args):
    from apps.rl import dqn

    if args.verb == "train":
        config = dqn_config(args)
        out = args.out or os.path.join(OUT, "dqn", args.preset)
        dqn.train(config, out, strategy=args.strategy, stop_after=args.budget_steps)
        print(f"run folder: {out} (checkpoints/, train.csv, episodes.csv, logs/)")
        print(f"PNG: {os.path.join(out, 'returns.png')}")
    elif args.verb == "evaluate":
        report = dqn.evaluate(args.out, episodes=args.episodes, epsilon=args.epsilon, max_steps=args.max_steps,
                              render=not args.no_render)
        for key in ("gif", "strip"):
            if key in report:
                print(f"{'GIF' if key == 'gif' else 'PNG'}: {report[key]}")
    elif args.verb == "export":
        dqn.export(args.out, export_dir=args.export_dir, version=args.version)
    elif args.verb == "play":
        from core import export as core_export

        tflite = args.tflite
        if tflite is None:
            version = os.path.basename(core_export.latest_version_dir(args.export_dir))
            tflite = os.path.join(args.export_dir, "tflite", version, "float.tflite")
        dqn.play(tflite, episodes=args.episodes, epsilon=args.epsilon, max_steps=args.max_steps,
                 gif=args.gif or None, env_id=args.env)


def run_reinforce(args):
    from apps.rl import reinforce

    policy, returns, png = reinforce.train(episodes=args.episodes, batch_episodes=args.batch_episodes,
                                           use_baseline=not args.no_baseline, seed=args.seed, out=args.out)
    print(f"mean return of the last 50 training episodes: {returns[-50:].mean():.1f}; "
          f"greedy policy over 10 episodes: {reinforce.greedy_return(policy):.1f}")
    print(f"PNG: {png}")
    if args.export:
        reinforce.export(policy, export_dir=args.export_dir, version=args.version)


def run_mcts(args):
    for flag in ("iterations", "games", "simulations", "epochs", "window", "hidden"):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            raise UserError(f"--{flag} must be at least 1 (got {value})")
    from apps.rl import alphazero

    if args.verb == "train":
        overrides = dict(alphazero.SMALL) if args.small else {}
        for key in ("iterations", "games", "simulations", "epochs", "window", "hidden", "c_puct", "learning_rate",
                    "seed"):
            if getattr(args, key) is not None:
                overrides[key] = getattr(args, key)
        alphazero.train(args.out, **overrides)
        print(f"run folder: {args.out} (config.json, model.keras, history.csv)")
        print(f"PNG: {os.path.join(args.out, 'learning_curve.png')}")
    elif args.verb == "evaluate":
        _, png = alphazero.evaluate(args.out, games=args.games, simulations=args.simulations, seed=args.seed)
        print(f"PNG: {png}")
    elif args.verb == "export":
        alphazero.export(args.out, export_dir=args.export_dir, version=args.version)
    elif args.verb == "play":
        from core import export as core_export

        tflite = args.tflite
        if tflite is None:
            version = os.path.basename(core_export.latest_version_dir(args.export_dir))
            tflite = os.path.join(args.export_dir, "tflite", version, "float.tflite")
        alphazero.play(tflite, opponent=args.opponent, ai_first=not args.second, games=args.games,
                       simulations=args.simulations, seed=args.seed)


def main(argv=None):
    args = parse_args(argv)
    {"bandits": run_bandits, "contextual": run_contextual, "tabular": run_tabular, "dqn": run_dqn,
     "reinforce": run_reinforce, "mcts": run_mcts}[args.command](args)


if __name__ == "__main__":
    run_cli(main, prog="apps.rl")
