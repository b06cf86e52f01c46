"""Experiment: the learning rate, and batch vs stochastic vs mini-batch gradient descent.

One model throughout: an MLP 64-32-10 (tanh hidden layer, linear outputs) fitted to the one-hot
targets of the 8x8 digits with the squared error L = 1/(10n) Σ ‖f(x) - t‖², by plain SGD
θ ← θ - η ∇L_B(θ), where L_B is the loss on a batch B.

Learning rate. Near a minimum L is close to a quadratic with Hessian H; gradient descent shrinks the
error along the eigenvector of eigenvalue λ by |1 - ηλ| per step. η ≪ 1/λ_max: every factor is ≈ 1,
the loss barely moves. η > 2/λ_max: the factor for λ_max exceeds 1 and the error grows geometrically —
the loss overflows to inf within a few dozen steps (diverged). The fastest progress is just below that
edge (LeCun, Bottou, Orr & Müller, "Efficient BackProp", 1998). The linear output layer makes the
divergence certain: on the bounded tanh features, the loss is a quadratic in the output weights.
A diverged run is recorded as such (its loss is checked with np.isfinite), not a crash.

Batch size. Full-batch gradient descent (|B| = n) makes one exact step per epoch; stochastic gradient
descent (|B| = 1, Robbins & Monro 1951) makes n noisy steps per epoch; mini-batch (|B| = 32) sits in
between. With the same η, per epoch seen, the small batches make far more progress; per second, |B| = 1
pays the fixed cost of a step n times and cannot use vectorized arithmetic, so mini-batches win
(Bottou, Curtis & Nocedal, "Optimization methods for large-scale machine learning", 2018).
"""

import os

import keras
import numpy as np

from apps.basics.common import digits_arrays, experiment_folder, print_table, save, train_loop


def digits_regression():
    """Standardized 8x8 digits with one-hot float targets: (x, t, y)."""
    (x, y), _ = digits_arrays()
    return x, np.eye(10, dtype=np.float32)[y], y


def mlp(input_dim, outputs=10, *, hidden=32, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((input_dim,)), keras.layers.Dense(hidden, activation="tanh"),
                             keras.layers.Dense(outputs)])


def train(x, t, *, learning_rate, batch_size, epochs, seed=0, evals_per_epoch=1):
    """The same initial MLP trained by SGD(learning_rate) on batches of batch_size: `train_loop`'s result."""
    return train_loop(mlp(x.shape[1], t.shape[1], seed=seed), x, t, loss_fn=keras.losses.MeanSquaredError(),
                      optimizer=keras.optimizers.SGD(learning_rate), batch_size=batch_size, epochs=epochs,
                      seed=seed, evals_per_epoch=evals_per_epoch)


def learning_rate_sweep(x, t, learning_rates, *, epochs, batch_size=32, seed=0):
    """Per η: the training-loss curve (per epoch), the final loss, and 'diverged' / 'ok'."""
    results = {}
    for lr in learning_rates:
        r = train(x, t, learning_rate=lr, batch_size=batch_size, epochs=epochs, seed=seed)
        results[lr] = {"curve": r["curve"][:, 2], "status": "diverged" if r["diverged"] else "ok",
                       "initial": float(r["curve"][0, 2]),
                       "final": float("nan") if r["diverged"] else float(r["curve"][-1, 2]),
                       "steps": len(r["step_loss"])}
    return results


def batch_sizes(x, t, sizes, *, learning_rate, epochs, seed=0, evals_per_epoch=8):
    """Per batch size: loss curve against examples seen and seconds of training (`train_loop`'s curve)."""
    return {size: train(x, t, learning_rate=learning_rate, batch_size=size, epochs=epochs, seed=seed,
                        evals_per_epoch=evals_per_epoch)["curve"] for size in sizes}


def run(*, folder=None, small=False, seed=0):
    import matplotlib.pyplot as plt

    folder = experiment_folder(folder, "learning_rate")
    x, t, _ = digits_regression()
    rates = [1e-4, 1e-2, 1.0, 10.0] if small else [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0]
    epochs = 3 if small else 10
    sweep = learning_rate_sweep(x, t, rates, epochs=epochs, seed=seed)
    best = min((r["final"], lr) for lr, r in sweep.items() if r["status"] == "ok")[1]
    print_table(f"learning-rate sweep: MLP 64-32-10 on 1,437 digits, squared error, SGD, batch 32, {epochs} epochs",
                ["η", "status", "initial loss", "final loss", "final / initial", "steps run"],
                [[lr, r["status"] + (" (best)" if lr == best else ""), r["initial"], r["final"],
                  r["final"] / r["initial"], r["steps"]] for lr, r in sweep.items()])

    if small:  # per-example SGD on all 1,437 images costs a few seconds per epoch
        x, t = x[:400], t[:400]
    sizes = {"full batch (GD)": len(x), "mini-batch 32": 32, "SGD (batch 1)": 1}
    bs_epochs, bs_rate = (2, 0.05) if small else (5, 0.05)
    curves = batch_sizes(x, t, list(sizes.values()), learning_rate=bs_rate, epochs=bs_epochs, seed=seed)
    budget = curves[32][-1, 1]  # the seconds mini-batch training took: what did the others reach by then?
    print_table(f"batch size at the same η = {bs_rate}, {bs_epochs} epochs on {len(x)} digits",
                ["method", "steps per epoch", "loss after 1 epoch", f"after {bs_epochs} epochs", "training seconds",
                 "ms per step", f"loss at {budget:.2g} s"],
                [[name, -(-len(x) // size), c[c[:, 0] == len(x), 2][0], c[-1, 2], c[-1, 1],
                  1000 * c[-1, 1] / (bs_epochs * -(-len(x) // size)), c[c[:, 1] <= budget, 2][-1]]
                 for name, size in sizes.items() for c in [curves[size]]])

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(rates)))
    for color, (lr, r) in zip(colors, sweep.items()):
        label = f"η={lr:g}" + (" diverged" if r["status"] == "diverged" else "")
        axes[0].semilogy(np.arange(len(r["curve"])), r["curve"], "x--" if r["status"] == "diverged" else "o-",
                         color=color, ms=3, label=label)
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("training loss (log)")
    axes[0].set_title("too low: slow; too high: diverges (inf, curve ends)", fontsize=9)
    for name, size in sizes.items():
        c = curves[size]
        axes[1].plot(c[:, 0] / len(x), c[:, 2], "o-", ms=3, label=name)
        axes[2].plot(c[1:, 1], c[1:, 2], "o-", ms=3, label=name)  # from the first evaluation: 0 s has no log
    axes[1].set_xlabel("epochs (examples seen / n)")
    axes[2].axhline(curves[1][0, 2], color="gray", ls="--", lw=0.8, label="initial loss")
    axes[2].set_xlabel("seconds of training steps")
    axes[2].set_xscale("log")
    axes[1].set_title(f"same η = {bs_rate}: small batches make more steps per epoch", fontsize=9)
    axes[2].set_title("per second: mini-batches use vectorized arithmetic", fontsize=9)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    png = save(fig, os.path.join(folder, "learning_rate_and_batch_size.png"))
    print(f"wrote {png}")
    return {"sweep": sweep, "best": best, "batch_curves": curves, "pngs": [png]}
