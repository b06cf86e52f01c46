"""Contextual bandits: LinUCB (Li et al. 2010) and ε-greedy on per-arm linear models, against the
context-free strategies of `apps.rl.bandits`.

At every step the agent sees a context x (d features), pulls one of k arms and gets a reward whose
expectation depends on both. The best arm changes with x, so an agent that ignores x (ε-greedy or
UCB on sample averages, as in bandits.py) can at best settle on the arm that is best on average, and
its regret grows linearly in T. Two environments:

  linear   E[r | x, a] = θ*_aᵀx with θ*_a ~ N(0, I/d), x = (1, z), z ~ N(0, I); reward noise N(0, 1)
  digits   scikit-learn's 1,797 8x8 digits as a bandit: x = (1, pixels/16), the arm is the class
           guessed, reward 1 when the guess is right (the label itself is never shown)

Disjoint LinUCB keeps one ridge regression per arm, over the steps where that arm was pulled:

    A_a = I + Σ x xᵀ,   b_a = Σ r x,   θ_a = A_a⁻¹ b_a,
    play argmax_a θ_aᵀx + α sqrt(xᵀ A_a⁻¹ x),

the estimate plus a confidence width that shrinks along the directions the arm has seen. A_a⁻¹ is kept
by the Sherman–Morrison update A⁻¹ ← A⁻¹ − (A⁻¹x)(A⁻¹x)ᵀ / (1 + xᵀA⁻¹x): O(d²) a step, no inverse.
Contextual ε-greedy uses the same models without the width and pulls a random arm with probability ε.
Both choose through `bandits.choose`, which takes any per-arm scores.

Regret is measured against the best arm for each context: Σ_t max_a E[r|x_t, a] − E[r|x_t, a_t].
All runs are simulated at once (one row per run), as in bandits.py; every strategy sees the same
contexts and reward noise (the environment's random stream does not depend on the actions).
"""

import numpy as np

from apps.rl import bandits
from core.errors import UserError

ENVIRONMENTS = ("linear", "digits")
STRATEGIES = ("linucb", "linear-epsilon") + bandits.STRATEGIES  # the last ones ignore the context

DEFAULT_SETTINGS = (
    ("linucb", {"alpha": 1.0}),
    ("linear-epsilon", {"epsilon": 0.1}),
    ("ucb", {"c": 2.0}),
    ("epsilon", {"epsilon": 0.1}),
)


class LinearPayoffs:
    """k arms with linear expected rewards θ*_aᵀx and Gaussian noise, one θ* per run."""

    def __init__(self, runs, arms=5, features=5, noise=1.0, seed=0):
        self.rng = np.random.default_rng(seed)
        self.dim, self.arms, self.runs, self.noise = features + 1, arms, runs, noise
        self.theta = self.rng.normal(0.0, 1.0 / np.sqrt(self.dim), (runs, arms, self.dim))

    def step(self):
        """(contexts (runs, d), expected rewards (runs, k), rewards of every arm (runs, k))."""
        x = np.concatenate([np.ones((self.runs, 1)), self.rng.normal(size=(self.runs, self.dim - 1))], axis=1)
        mean = np.einsum("rkd,rd->rk", self.theta, x)
        return x, mean, mean + self.noise * self.rng.normal(size=mean.shape)


class DigitsBandit:
    """Classification as a bandit: an image per run and step (drawn with replacement), 10 arms."""

    def __init__(self, runs, seed=0):
        from sklearn.datasets import load_digits  # the whole set, as NumPy: no TensorFlow needed here

        digits = load_digits()
        self.x = np.concatenate([np.ones((len(digits.data), 1)), digits.data / 16.0], axis=1)
        self.y = digits.target
        self.rng, self.runs, self.arms, self.dim = np.random.default_rng(seed), runs, 10, self.x.shape[1]

    def step(self):
        index = self.rng.integers(0, len(self.y), self.runs)
        mean = np.eye(self.arms)[self.y[index]]  # reward 1 for the right class, exactly
        return self.x[index], mean, mean


def make_environment(name, runs, seed=0):
    if name == "linear":
        return LinearPayoffs(runs, seed=seed)
    if name == "digits":
        return DigitsBandit(runs, seed=seed)
    raise UserError(f"unknown contextual environment '{name}'; choose from: {', '.join(ENVIRONMENTS)}")


class LinearModels:
    """One ridge regression per arm and run: A⁻¹ (Sherman–Morrison), b and θ = A⁻¹b."""

    def __init__(self, runs, arms, dim, ridge=1.0):
        self.a_inv = np.broadcast_to(np.eye(dim) / ridge, (runs, arms, dim, dim)).copy()
        self.b = np.zeros((runs, arms, dim))
        self.theta = np.zeros((runs, arms, dim))
        self.rows = np.arange(runs)

    def estimate(self, x):
        """θ_aᵀx and the width sqrt(xᵀA_a⁻¹x) for every arm: two (runs, k) arrays."""
        mean = np.einsum("rkd,rd->rk", self.theta, x)
        a_inv_x = (self.a_inv @ x[:, None, :, None])[..., 0]
        return mean, np.sqrt(np.maximum(np.einsum("rkd,rd->rk", a_inv_x, x), 0.0))

    def update(self, x, arm, reward):
        a_inv = self.a_inv[self.rows, arm]
        u = (a_inv @ x[:, :, None])[..., 0]  # A⁻¹x (A⁻¹ is symmetric, so xᵀA⁻¹ = uᵀ)
        a_inv = a_inv - u[:, :, None] * u[:, None, :] / (1.0 + np.einsum("rd,rd->r", u, x))[:, None, None]
        self.a_inv[self.rows, arm] = a_inv
        self.b[self.rows, arm] += reward[:, None] * x
        self.theta[self.rows, arm] = (a_inv @ self.b[self.rows, arm][:, :, None])[..., 0]


def label(strategy, params):
    if strategy == "linucb":
        return f"LinUCB α={params.get('alpha', 1.0)}"
    if strategy == "linear-epsilon":
        return f"contextual ε-greedy ε={params.get('epsilon', 0.1)}"
    return f"{bandits.label(strategy, params)} (no context)"


def simulate(strategy, environment="linear", *, steps=1000, runs=100, seed=0, record=False, **params):
    """Cumulative regret and the share of optimal arms per step, averaged over runs. With `record`, also
    the contexts, arms and rewards of every step and the final linear models (for checking them)."""
    if strategy not in STRATEGIES:
        raise UserError(f"unknown strategy '{strategy}'; choose one of: {', '.join(STRATEGIES)}")
    env = make_environment(environment, runs, seed) if isinstance(environment, str) else environment
    rng = np.random.default_rng([seed, 1])  # the agent's own stream, apart from the environment's
    contextual = strategy in ("linucb", "linear-epsilon")
    models = LinearModels(env.runs, env.arms, env.dim) if contextual else None
    q, counts = np.zeros((env.runs, env.arms)), np.zeros((env.runs, env.arms))
    rows = np.arange(env.runs)
    regret, optimal, history = np.zeros((steps, env.runs)), np.zeros(steps), []
    for t in range(steps):
        x, mean, rewards = env.step()
        if strategy == "linucb":
            estimate, width = models.estimate(x)
            arm = bandits.choose("greedy", estimate + params.get("alpha", 1.0) * width, counts, t, rng)
        elif strategy == "linear-epsilon":
            arm = bandits.choose("epsilon", models.estimate(x)[0], counts, t, rng,
                                 epsilon=params.get("epsilon", 0.1))
        else:
            arm = bandits.choose(strategy, q, counts, t, rng, **params)
        reward = rewards[rows, arm]
        counts[rows, arm] += 1
        if contextual:
            models.update(x, arm, reward)
        else:
            q[rows, arm] += (reward - q[rows, arm]) / counts[rows, arm]  # sample averages, as bandits.py
        regret[t] = mean.max(axis=1) - mean[rows, arm]
        optimal[t] = (mean[rows, arm] == mean.max(axis=1)).mean()
        if record:
            history.append((x, arm, reward))
    result = {"cumulative_regret": regret.cumsum(axis=0).mean(axis=1),
              "final_regret_per_run": regret.sum(axis=0), "optimal_fraction": optimal}
    if record:
        result["contexts"], result["arms"], result["rewards"] = (np.stack(part, axis=1) for part in zip(*history))
        result["models"] = models
    return result


def compare(environment, settings=DEFAULT_SETTINGS, *, steps=1000, runs=100, seed=0):
    """Every (strategy, params) setting on the same environment draws (same seed)."""
    return [(label(s, p), simulate(s, environment, steps=steps, runs=runs, seed=seed, **p)) for s, p in settings]


def summary(results, last=100):
    """(label, final cumulative regret, its standard error over runs, % optimal arm over the last steps)."""
    out = []
    for name, r in results:
        per_run = r["final_regret_per_run"]
        out.append((name, float(r["cumulative_regret"][-1]), float(per_run.std() / np.sqrt(len(per_run))),
                    float(100 * r["optimal_fraction"][-last:].mean())))
    return out


def plot(all_results, png_path, runs):
    """One row per environment: cumulative regret, and % optimal arm (moving average over 50 steps)."""
    import matplotlib.pyplot as plt

    from core import plots

    fig, axes = plt.subplots(len(all_results), 2, figsize=(11, 3.8 * len(all_results)), squeeze=False)
    for (environment, results), (left, right) in zip(all_results.items(), axes):
        for name, result in results:
            left.plot(result["cumulative_regret"], label=name, lw=1.2)
            window = min(50, len(result["optimal_fraction"]))
            smooth = np.convolve(result["optimal_fraction"], np.ones(window) / window, mode="valid")
            right.plot(np.arange(window - 1, len(result["optimal_fraction"])), 100 * smooth, label=name, lw=1.2)
        left.set_ylabel("cumulative regret")
        right.set_ylabel("% optimal arm (last 50 steps)")
        left.set_title(f"{environment}: regret against the best arm for each context ({runs[environment]} runs)",
                       fontsize=10)
        right.set_title(f"{environment}: share of the best arm", fontsize=10)
        for ax in (left, right):
            ax.set_xlabel("steps")
            ax.grid(alpha=0.3)
        left.legend(fontsize=8)
    return plots.save_figure(fig, png_path)
