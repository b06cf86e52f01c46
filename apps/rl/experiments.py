"""The experiment verbs of `python -m apps.rl`: bandits, contextual and tabular (no model to keep: each writes a
PNG or a report into its --run folder and prints the table)."""

import json
import os

from core.checkpoints import make_output_dir
from core.cli import resolve_config
from core.errors import UserError


def bandits(args):
    from apps.rl import bandits as testbed
    from apps.rl.options import Bandits

    options = resolve_config(Bandits, args)
    results = testbed.compare(arms=options.arms, steps=options.steps, runs=options.runs, seed=options.seed)
    png = testbed.plot(results, os.path.join(args.run, "bandits.png"), options.runs)
    print(f"{'setting':32s} {'reward (last 100)':>18s} {'% optimal (last 100)':>21s}")
    for name, reward, optimal in testbed.summary(results):
        print(f"{name:32s} {reward:18.3f} {optimal:21.1f}")
    print(f"best possible (mean of max q*): {results[0][1]['best_possible']:.3f}")
    print(f"PNG: {png}")


def contextual(args):
    from apps.rl import contextual as bandits
    from apps.rl.options import Contextual

    options = resolve_config(Contextual, args)
    environments = list(bandits.ENVIRONMENTS) if options.env == "all" else options.env.split(",")
    for name in environments:
        if name not in bandits.ENVIRONMENTS:
            raise UserError(f"unknown contextual environment '{name}'; choose from: linear, digits, all")
    small = options.small
    sizes = {"linear": (300, 50) if small else (1000, 200), "digits": (500, 5) if small else (2000, 20)}
    settings = (("linucb", {"alpha": options.alpha}), ("linear-epsilon", {"epsilon": options.epsilon}),
                ("ucb", {"c": 2.0}), ("epsilon", {"epsilon": options.epsilon}))
    all_results, runs = {}, {}
    for name in environments:
        steps, runs[name] = options.steps or sizes[name][0], options.runs or sizes[name][1]
        results = bandits.compare(name, settings, steps=steps, runs=runs[name], seed=options.seed)
        all_results[name] = results
        print(f"\n{name}: {steps} steps, {runs[name]} runs")
        print(f"{'agent':34s} {'cumulative regret':>18s} {'± s.e.':>8s} {'% optimal (last 100)':>21s}")
        for agent, regret, error, optimal in bandits.summary(results):
            print(f"{agent:34s} {regret:18.1f} {error:8.1f} {optimal:21.1f}")
    png = bandits.plot(all_results, os.path.join(args.run, "contextual.png"), runs)
    print(f"PNG: {png}")


def tabular(args):
    from apps.rl import tabular as methods
    from apps.rl.options import Tabular

    options = resolve_config(Tabular, args)
    envs = list(methods.ENVIRONMENTS) if options.env == "all" else options.env.split(",")
    for name in envs:
        if name not in methods.ENVIRONMENTS:
            raise UserError(f"unknown tabular environment '{name}'; choose from: {', '.join(methods.ENVIRONMENTS)}")
    algorithms = list(methods.ALGORITHMS) if options.algorithms == "all" else options.algorithms.split(",")
    for name in algorithms:
        if name not in methods.ALGORITHMS:
            raise UserError(f"unknown tabular algorithm '{name}'; choose from: {', '.join(methods.ALGORITHMS)}")
    make_output_dir(args.run)
    report = {}
    for env_name in envs:
        env, gamma = methods.make(env_name)
        optimal = methods.value_iteration(env, gamma)
        print(f"\n== {env_name} (γ={gamma}): optimal value of the start = "
              f"{methods.start_states(env) @ optimal['V']:.4f}")
        for algorithm in algorithms:
            overrides = {"episodes": options.episodes} if options.episodes and algorithm not in (
                "value_iteration", "policy_iteration") else {}
            result = methods.learn(env_name, algorithm, seed=options.seed, **overrides)
            check = methods.compare_to_optimal(env, result["policy"], optimal, gamma)
            check["greedy_mean_return"] = methods.greedy_return(env, result["policy"], episodes=200, seed=options.seed)
            report[f"{env_name}/{algorithm}"] = check
            print(f"-- {algorithm}: optimal actions in {100 * check['optimal_action_share']:.0f}% of the states "
                  f"where it matters; V^π(start) = {check['start_value']:.4f} "
                  f"(optimal {check['optimal_start_value']:.4f}); greedy return {check['greedy_mean_return']:.3f}")
            print(methods.policy_grid(env_name, env, result["policy"]))
            check["note"] = methods.shortfall_note(algorithm, check)
            if check["note"]:
                print(f"note: {check['note']}")
    path = os.path.join(args.run, "tabular.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    print(f"\nreport: {path}")
