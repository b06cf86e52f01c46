"""Multi-armed bandits (the k-armed testbed of Sutton & Barto, ch. 2).

Each run draws true action values q*(a) ~ N(0, 1) for k arms; pulling arm a
pays N(q*(a), 1). An agent keeps sample-average estimates Q(a) (or a
constant step size) and chooses with one of:

  greedy        argmax Q (ties broken at random)
  epsilon       ε-greedy: a random arm with probability ε
  softmax       Boltzmann: P(a) ∝ exp(Q(a)/τ), τ decreasing as τ0/(1 + t·decay)
  ucb           argmax Q(a) + c·sqrt(ln t / N(a)) (untried arms first)

All runs are simulated at once (NumPy, one row per run), so 2,000 runs of
1,000 steps take about a second. `run_testbed` returns the average reward
and the fraction of optimal actions at every step, averaged over runs.
"""

import numpy as np

from core.errors import UserError

STRATEGIES = ("greedy", "epsilon", "softmax", "ucb")

# The settings drawn on the default figure: the textbook comparison.
DEFAULT_SETTINGS = (
    ("greedy", {}),
    ("epsilon", {"epsilon": 0.1}),
    ("epsilon", {"epsilon": 0.01}),
    ("softmax", {"temperature": 1.0, "decay": 0.01}),
    ("ucb", {"c": 2.0}),
)


def label(strategy, params):
    if strategy == "greedy":
        return "greedy"
    if strategy == "epsilon":
        return f"ε-greedy ε={params.get('epsilon', 0.1)}"
    if strategy == "softmax":
        return f"softmax τ0={params.get('temperature', 1.0)} decay={params.get('decay', 0.01)}"
    return f"UCB c={params.get('c', 2.0)}"


def choose(strategy, q, counts, t, rng, epsilon=0.1, temperature=1.0, decay=0.01, c=2.0):
    """Arm per run (shape (runs,)) at step t (0-based) from estimates q (runs, k)."""
    runs, k = q.shape
    if strategy == "greedy" or strategy == "epsilon":
        # argmax with random tie-breaking: add a tiny random jitter to the ties only
        best = q == q.max(axis=1, keepdims=True)
        action = np.argmax(best * rng.random((runs, k)), axis=1)
        if strategy == "epsilon":
            explore = rng.random(runs) < epsilon
            action = np.where(explore, rng.integers(0, k, runs), action)
        return action
    if strategy == "softmax":
        tau = temperature / (1.0 + decay * t)
        logits = (q - q.max(axis=1, keepdims=True)) / tau
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        return (p.cumsum(axis=1) > rng.random((runs, 1))).argmax(axis=1)
    if strategy == "ucb":
        with np.errstate(divide="ignore", invalid="ignore"):
            bonus = c * np.sqrt(np.log(t + 1) / counts)
        score = np.where(counts == 0, np.inf, q + bonus)
        best = score == score.max(axis=1, keepdims=True)
        return np.argmax(best * rng.random((runs, k)), axis=1)
    raise UserError(f"unknown bandit strategy '{strategy}'; choose one of: {', '.join(STRATEGIES)}")


def run_testbed(strategy, *, arms=10, steps=1000, runs=2000, seed=0, initial=0.0, step_size=None, **params):
    """Average reward and % optimal action per step, over `runs` independent bandits."""
    if strategy not in STRATEGIES:
        raise UserError(f"unknown bandit strategy '{strategy}'; choose one of: {', '.join(STRATEGIES)}")
    rng = np.random.default_rng(seed)
    q_true = rng.normal(0.0, 1.0, (runs, arms))
    optimal = q_true.argmax(axis=1)
    q = np.full((runs, arms), float(initial))
    counts = np.zeros((runs, arms))
    rows = np.arange(runs)
    mean_reward = np.zeros(steps)
    optimal_fraction = np.zeros(steps)
    for t in range(steps):
        action = choose(strategy, q, counts, t, rng, **params)
        reward = rng.normal(q_true[rows, action], 1.0)
        counts[rows, action] += 1
        alpha = (1.0 / counts[rows, action]) if step_size is None else step_size
        q[rows, action] += alpha * (reward - q[rows, action])
        mean_reward[t] = reward.mean()
        optimal_fraction[t] = (action == optimal).mean()
    return {"mean_reward": mean_reward, "optimal_fraction": optimal_fraction,
            "best_possible": float(q_true.max(axis=1).mean())}


def compare(settings=DEFAULT_SETTINGS, *, arms=10, steps=1000, runs=2000, seed=0):
    """Run every (strategy, params) setting on the same testbed (same seed)."""
    return [(label(s, p), run_testbed(s, arms=arms, steps=steps, runs=runs, seed=seed, **p)) for s, p in settings]


def plot(results, png_path, runs):
    """Two panels: average reward and % optimal action against steps."""
    import matplotlib.pyplot as plt

    from core import plots

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    for name, result in results:
        top.plot(result["mean_reward"], label=name, lw=1)
        bottom.plot(100 * result["optimal_fraction"], label=name, lw=1)
    best = results[0][1]["best_possible"]
    top.axhline(best, color="k", ls="--", lw=0.8, label=f"E[max q*] = {best:.2f}")
    top.set_ylabel("average reward")
    bottom.set_ylabel("% optimal action")
    bottom.set_xlabel("steps")
    top.set_title(f"{len(results[0][1]['mean_reward'])}-step, 10-armed testbed, averaged over {runs} runs")
    top.legend(fontsize=8)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    return plots.save_figure(fig, png_path)


def summary(results, last=100):
    """Mean reward and % optimal over the last `last` steps, per setting."""
    return [(name, float(r["mean_reward"][-last:].mean()), float(100 * r["optimal_fraction"][-last:].mean()))
            for name, r in results]
