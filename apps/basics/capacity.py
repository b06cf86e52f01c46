"""Experiment: universal approximation, depth vs width, and capacity (bias and variance).

Universal approximation (Cybenko 1989; Hornik, Stinchcombe & White 1989; for ReLU Leshno et al. 1993):
one hidden layer with enough units approximates any continuous function on a compact set to any
accuracy. It says nothing about how many units: a sawtooth with k teeth needs O(k) ReLU units in one
layer, but a composition of L "tent" maps — a net of depth L and constant width — has 2ᴸ teeth
(Telgarsky, "Benefits of depth in neural networks", 2016). Here a 1-D target is fitted by one wide
hidden layer and by three narrow ones with about the same parameter count
(1-w-1: 3w + 1 parameters; 1-k-k-k-1: 2k² + 5k + 1), and by a straight line for reference.

Capacity: with more parameters the training error falls (less bias) while the gap between validation
and training error — the variance part of the generalization error — grows; with more training data
at a fixed model the gap shrinks (learning curves; Hastie, Tibshirani & Friedman, The Elements of
Statistical Learning, §7.3). Both are measured with one-hidden-layer MLPs on the 8x8 digits (the 360
held-out images serve as the validation set).
"""

import os

import keras
import numpy as np

from apps.basics.common import digits_arrays, experiment_folder, print_table, save

TARGETS = {
    "sin": lambda x: np.sin(3 * np.pi * x),
    "sawtooth": lambda x: 2 * np.abs(2 * ((2 * x) % 1) - 1) - 1,  # 4 teeth on [-1, 1], values in [-1, 1]
}


def mlp(input_dim, hidden, outputs, *, activation="relu", first_bias="zeros", seed=0):
    """Dense layers of the sizes in `hidden` (He-normal kernels; the first layer's biases from `first_bias`, the
    others 0), then a linear output layer."""
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((input_dim,))]
    layers += [keras.layers.Dense(h, activation=activation, kernel_initializer="he_normal",
                                  bias_initializer=first_bias if i == 0 else "zeros") for i, h in enumerate(hidden)]
    layers.append(keras.layers.Dense(outputs))
    return keras.Sequential(layers)


def fit_full_batch(model, x, y, *, loss_fn, steps, learning_rate=0.01):
    """`steps` full-batch Adam steps, the loop itself inside one traced graph (fast for tiny models)."""
    import tensorflow as tf

    optimizer = keras.optimizers.Adam(learning_rate)
    optimizer.build(model.trainable_variables)
    x, y = tf.constant(x), tf.constant(y)

    @tf.function
    def loop():
        for _ in tf.range(steps):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

    logger = tf.get_logger()  # one new traced loop per model is the plan, not the "retracing" TF warns about
    level = logger.level
    logger.setLevel("ERROR")
    try:
        loop()
    finally:
        logger.setLevel(level)
    return model


def equal_size_pairs(widths_deep):
    """(deep k, shallow w) pairs: 1-k-k-k-1 and 1-w-1 with about the same number of parameters."""
    return [(k, round((2 * k * k + 5 * k) / 3)) for k in widths_deep]


def approximation(target, deep_widths, *, steps, n=512, seeds=(0,)):
    """Per model ('linear', 'shallow w', 'deep k'): parameter count, MSE on a fine grid and predictions of the
    best of `seeds` (random restarts: the question is what the architecture can represent, and one unlucky
    start of gradient descent should not answer it)."""
    x = np.linspace(-1, 1, n, dtype=np.float32)[:, None]
    y = TARGETS[target](x).astype(np.float32)
    grid = np.linspace(-1, 1, 4 * n, dtype=np.float32)[:, None]
    truth = TARGETS[target](grid)
    results = {}
    coef = np.polyfit(x[:, 0], y[:, 0], 1)  # the best straight line, in closed form
    line = np.polyval(coef, grid)
    results["linear"] = {"params": 2, "mse": float(np.mean((line - truth) ** 2)), "prediction": line}
    for k, w in equal_size_pairs(deep_widths):
        for name, hidden in ((f"shallow {w}", (w,)), (f"deep {k}x3", (k, k, k))):
            for seed in seeds:
                # zero biases would put every first-layer kink at x = 0; spread over [-1, 1] they start where the
                # target bends
                model = mlp(1, hidden, 1, first_bias=keras.initializers.RandomUniform(-1, 1, seed=seed), seed=seed)
                model = fit_full_batch(model, x, y, loss_fn=keras.losses.MeanSquaredError(), steps=steps)
                prediction = model(grid).numpy()
                mse = float(np.mean((prediction - truth) ** 2))
                if name not in results or mse < results[name]["mse"]:
                    results[name] = {"params": model.count_params(), "mse": mse, "prediction": prediction,
                                     "kind": name.split()[0]}
    return grid, truth, results


def classification_errors(x, y, x_val, y_val, *, width, steps, seed=0):
    """Training and validation error (1 - accuracy) of a 64-width-10 ReLU MLP fitted by full-batch Adam."""
    model = fit_full_batch(mlp(x.shape[1], (width,), 10, seed=seed), x, y, steps=steps,
                           loss_fn=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return tuple(float((model(a).numpy().argmax(axis=1) != b).mean()) for a, b in ((x, y), (x_val, y_val)))


def model_size_curve(widths, *, steps, train_size=300, seed=0):
    """{width: (train error, validation error)} on `train_size` digits."""
    (x, y), (x_val, y_val) = digits_arrays()
    return {w: classification_errors(x[:train_size], y[:train_size], x_val, y_val, width=w, steps=steps, seed=seed)
            for w in widths}


def learning_curve(sizes, *, width, steps, seed=0):
    """{training-set size: (train error, validation error)} for a fixed width."""
    (x, y), (x_val, y_val) = digits_arrays()
    return {n: classification_errors(x[:n], y[:n], x_val, y_val, width=width, steps=steps, seed=seed) for n in sizes}


def run(*, folder=None, small=False, seed=0):
    import matplotlib.pyplot as plt

    folder = experiment_folder(folder, "capacity")
    deep_widths, steps = ((4, 16), 800) if small else ((3, 4, 8, 16, 32), 3000)
    seeds = range(seed, seed + (1 if small else 3))
    approx = {t: approximation(t, deep_widths, steps=steps, seeds=seeds) for t in TARGETS}
    print_table(f"1-D fits on 512 points of [-1, 1], full-batch Adam 0.01, {steps} steps, best of {len(seeds)} "
                "seed(s): MSE on a 4x finer grid",
                ["model", "parameters", *[f"MSE {t}" for t in TARGETS]],
                [[name, r["params"], *[approx[t][2][name]["mse"] for t in TARGETS]]
                 for name, r in approx["sin"][2].items()])

    widths = (1, 2, 4, 8, 16, 32, 64, 256) if not small else (1, 4, 16, 64)
    sizes = (25, 50, 100, 200, 400, 800, 1437) if not small else (50, 200, 800)
    class_steps = 300 if small else 600
    by_size = model_size_curve(widths, steps=class_steps, seed=seed)
    by_data = learning_curve(sizes, width=64, steps=class_steps, seed=seed)
    print_table(f"one hidden ReLU layer on 300 digits, full-batch Adam, {class_steps} steps: error (1 - accuracy)",
                ["hidden units", "parameters", "train error", "validation error", "gap"],
                [[w, 64 * w + w + 10 * w + 10, tr, va, va - tr] for w, (tr, va) in by_size.items()])
    print_table(f"learning curve: 64 hidden units, {class_steps} steps, training set of n digits",
                ["n", "train error", "validation error", "gap"],
                [[n, tr, va, va - tr] for n, (tr, va) in by_data.items()])

    fig, axes = plt.subplots(2, 3, figsize=(16, 8))
    for row, (target, (grid, truth, results)) in enumerate(approx.items()):
        ax = axes[row, 0]
        ax.plot(grid, truth, "k", lw=2, label=target)
        largest = [name for name in results if name != "linear"][-2:]
        for name in ["linear", *largest]:
            ax.plot(grid, results[name]["prediction"], lw=1, label=f"{name} ({results[name]['params']} params)")
        ax.set_title(f"{target}: fits of the largest pair", fontsize=9)
        ax.legend(fontsize=7)
        ax = axes[row, 1]
        for kind, marker in (("shallow", "o-"), ("deep", "s-")):
            points = [(r["params"], r["mse"]) for r in results.values() if r.get("kind") == kind]
            ax.loglog(*zip(*points), marker, label="one hidden layer" if kind == "shallow" else "three hidden layers")
        ax.axhline(results["linear"]["mse"], color="gray", ls="--", label="straight line")
        ax.set_xlabel("parameters")
        ax.set_ylabel("MSE")
        ax.set_title(f"{target}: error against parameter count", fontsize=9)
        ax.legend(fontsize=7)
    ax = axes[0, 2]
    ax.semilogx(list(by_size), [e[0] for e in by_size.values()], "o-", label="training error")
    ax.semilogx(list(by_size), [e[1] for e in by_size.values()], "s-", label="validation error")
    ax.set_xlabel("hidden units (300 training digits)")
    ax.set_title("model size: training error falls", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[1, 2]
    ax.semilogx(list(by_data), [e[0] for e in by_data.values()], "o-", label="training error")
    ax.semilogx(list(by_data), [e[1] for e in by_data.values()], "s-", label="validation error")
    ax.set_xlabel("training-set size (64 hidden units)")
    ax.set_title("learning curve: the gap shrinks with more data", fontsize=9)
    ax.legend(fontsize=7)
    for ax in axes.ravel():
        ax.grid(alpha=0.3)
    png = save(fig, os.path.join(folder, "capacity.png"))
    print(f"wrote {png}")
    for _, _, results in approx.values():
        for r in results.values():
            r.pop("prediction")
    return {"approximation": {t: a[2] for t, a in approx.items()}, "model_size": by_size, "data_size": by_data,
            "pngs": [png]}
