"""Experiment: bias initialization of ReLU layers and dead units.

A ReLU unit h = max(0, wᵀx + b) is dead on a data set when wᵀx + b ≤ 0 for every example x: its
output and its gradient are 0 everywhere, so nothing the data says can move w or b again. At
initialization a unit is dead exactly when max_x wᵀx ≤ -b, so a small positive bias b rescues the
units whose largest pre-activation lies in (-b, 0] — in the first layer the set of live units can only
grow with b. That is the argument for initializing ReLU biases at a small constant such as 0.01 or 0.1
(Krizhevsky, Sutskever & Hinton 2012 used 1 in some layers); the usual advice (CS231n notes) is that
it is not clear this helps consistently, and 0 is the common default.

The experiment counts the units never active on 1,437 digits (inputs shifted by -1, so that zero-
centred weights see a biased input distribution) in deep narrow ReLU nets with He-normal weights,
over several random seeds: at initialization for several biases and widths, and after training.
"""

import os

import keras
import numpy as np

from apps.basics.common import digits_arrays, experiment_folder, print_table, save, train_loop


def relu_mlp(input_dim, *, width, depth=6, bias=0.0, seed=0):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((input_dim,))]
    layers += [keras.layers.Dense(width, activation="relu", kernel_initializer="he_normal",
                                  bias_initializer=keras.initializers.Constant(bias)) for _ in range(depth)]
    layers.append(keras.layers.Dense(10, name="logits"))
    return keras.Sequential(layers)


def dead_per_layer(model, x):
    """Per hidden layer: the share of its units that are ≤ 0 on every example of x."""
    h, fractions = x, []
    for layer in model.layers[:-1]:
        h = layer(h).numpy()
        fractions.append(float((h <= 0).all(axis=0).mean()))
    return np.array(fractions)


def dead_at_init(x, *, widths, biases, seeds, depth=6):
    """{(width, bias): array over seeds of the dead share of all hidden units} before any training."""
    return {(w, b): np.array([dead_per_layer(relu_mlp(x.shape[1], width=w, depth=depth, bias=b, seed=s), x).mean()
                              for s in seeds])
            for w in widths for b in biases}


def dead_after_training(x, y, *, width, biases, seeds, epochs, learning_rate, depth=6):
    """{bias: (dead share before, dead share after `epochs` of SGD) per seed, arrays over seeds}."""
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    results = {}
    for b in biases:
        before, after = [], []
        for s in seeds:
            model = relu_mlp(x.shape[1], width=width, depth=depth, bias=b, seed=s)
            before.append(dead_per_layer(model, x).mean())
            train_loop(model, x, y, loss_fn=loss_fn, optimizer=keras.optimizers.SGD(learning_rate), batch_size=32,
                       epochs=epochs, seed=s)
            after.append(dead_per_layer(model, x).mean())
        results[b] = (np.array(before), np.array(after))
    return results


def shifted_digits(shift=-1.0):
    (x, y), _ = digits_arrays()
    return x + np.float32(shift), y


def run(*, folder=None, small=False, seed=0):
    import matplotlib.pyplot as plt

    folder = experiment_folder(folder, "relu_bias")
    x, y = shifted_digits()
    biases = (0.0, 0.01, 0.1, 0.5)
    widths = (8, 32) if small else (8, 16, 64)
    seeds = range(seed, seed + (4 if small else 20))
    init = dead_at_init(x, widths=widths, biases=biases, seeds=seeds)
    print_table(f"share of hidden units never active on the digits (inputs - 1) at initialization, 6 ReLU layers, "
                f"He normal; mean over {len(seeds)} seeds (min-max)",
                ["width", *[f"bias {b:g}" for b in biases]],
                [[w, *[f"{init[w, b].mean():.3f} ({init[w, b].min():.2f}-{init[w, b].max():.2f})" for b in biases]]
                 for w in widths])

    train_seeds, epochs = range(seed, seed + (1 if small else 5)), (1 if small else 3)
    trained = dead_after_training(x, y, width=16, biases=(0.0, 0.1), seeds=train_seeds, epochs=epochs,
                                  learning_rate=0.1)
    print_table(f"width 16, SGD η = 0.1, batch 32, {epochs} epoch(s): dead share before and after training, "
                f"mean over {len(train_seeds)} seeds",
                ["bias", "before", "after", "after, per seed"],
                [[b, before.mean(), after.mean(), " ".join(f"{a:.2f}" for a in after)]
                 for b, (before, after) in trained.items()])

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for w in widths:
        means = [init[w, b].mean() for b in biases]
        axes[0].plot(range(len(biases)), means, "o-", label=f"width {w}")
    axes[0].set_xticks(range(len(biases)), [f"{b:g}" for b in biases])
    axes[0].set_xlabel("initial bias of every ReLU unit")
    axes[0].set_ylabel("share of units never active on the data")
    axes[0].set_title(f"at initialization (mean over {len(seeds)} seeds)", fontsize=9)
    for i, (b, (before, after)) in enumerate(trained.items()):
        axes[1].scatter(np.full(len(after), i) - 0.1, before, marker="o", color="gray",
                        label="before training" if i == 0 else None)
        axes[1].scatter(np.full(len(after), i) + 0.1, after, marker="x", color="C3",
                        label="after training" if i == 0 else None)
    axes[1].set_xticks(range(len(trained)), [f"bias {b:g}" for b in trained])
    axes[1].set_ylabel("share of units never active")
    axes[1].set_title(f"width 16, after {epochs} epoch(s) of SGD η = 0.1 (one point per seed)", fontsize=9)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    png = save(fig, os.path.join(folder, "dead_units.png"))
    print(f"wrote {png}")
    return {"init": init, "trained": trained, "pngs": [png]}
