"""Experiment 5: activation functions.

  sign        ±1; derivative 0 almost everywhere: backprop cannot train the layers below it
  sigmoid     1/(1+e⁻ᶻ); derivative ≤ 1/4, saturates on both sides
  tanh        zero-centred sigmoid; derivative ≤ 1, saturates
  ReLU        max(0, z); derivative 1 or 0 — a unit whose input is negative for every sample is
              dead: it gets no gradient and never recovers (more of them at high learning rates)
  leaky ReLU  max(αz, z), α = 0.1 here
  PReLU       leaky ReLU whose α is learned (one per unit, starting at 0.25)
  ELU         z for z > 0, α(eᶻ - 1) otherwise
  SELU        λ·ELU with λ ≈ 1.0507, α ≈ 1.6733: with LeCun-normal weights the activations keep
              mean 0 and variance 1 through depth (self-normalizing, Klambauer et al. 2017)

Derivatives are taken by tf.GradientTape through the Keras implementations.
"""

import os
import warnings

import numpy as np

from apps.basics.common import experiment_folder, load_arrays, print_table, save

NAMES = ("sign", "sigmoid", "tanh", "relu", "leaky_relu", "prelu", "elu", "selu")
INIT = {"selu": "lecun_normal", "relu": "he_normal", "leaky_relu": "he_normal", "prelu": "he_normal",
        "elu": "he_normal"}  # the rest: glorot_uniform


def activation_layer(name):
    """A Keras layer applying activation `name`."""
    import keras
    import tensorflow as tf

    if name == "sign":
        return keras.layers.Lambda(lambda z: tf.where(z >= 0, 1.0, -1.0))
    if name == "leaky_relu":
        return keras.layers.LeakyReLU(negative_slope=0.1)
    if name == "prelu":
        return keras.layers.PReLU(alpha_initializer=keras.initializers.Constant(0.25))
    return keras.layers.Activation(name)


def curves(z=np.linspace(-4, 4, 801, dtype=np.float32)):
    """f(z) and f′(z) by GradientTape for every activation."""
    import tensorflow as tf

    out = {}
    for name in NAMES:
        layer = activation_layer(name)
        zt = tf.constant(z[:, None])
        with tf.GradientTape() as tape:
            tape.watch(zt)
            y = layer(zt)
        grad = tape.gradient(y, zt)
        out[name] = (y.numpy()[:, 0], np.zeros_like(z) if grad is None else grad.numpy()[:, 0])
    return z, out


def build_mlp(input_dim, activation, *, depth=3, width=128, seed=0):
    import keras

    layers = [keras.Input((input_dim,))]
    for i in range(depth):
        layers += [keras.layers.Dense(width, kernel_initializer=INIT.get(activation, "glorot_uniform"),
                                      name=f"dense{i + 1}"), activation_layer(activation)]
    layers.append(keras.layers.Dense(10, name="logits"))
    return keras.Sequential(layers)


def dead_fraction(model, x):
    """Share of hidden units (after each activation) that output ≤ 0 for every sample of x — dead ReLUs."""
    import keras

    outputs = [layer.output for layer in model.layers if not isinstance(layer, keras.layers.Dense)]
    probe = keras.Model(model.inputs, outputs)
    activations = probe.predict(x, verbose=0, batch_size=1024)
    dead = sum(int((a <= 0).all(axis=0).sum()) for a in activations)
    return dead / sum(a.shape[1] for a in activations)


def train(model, x, y, *, optimizer, epochs, batch_size=64, x_test=None, y_test=None):
    import keras

    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    with warnings.catch_warnings():  # sign: "Gradients do not exist" for the hidden layers, which is the point
        warnings.filterwarnings("ignore", message="Gradients do not exist")
        model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0)
    if x_test is not None:
        loss, accuracy = model.evaluate(x_test, y_test, verbose=0, batch_size=1024)
        return float(loss), float(accuracy)


def dying_relu(x, y, learning_rates, *, activation="relu", epochs=1, seed=0):
    """Dead-unit share before and after one epoch of plain SGD at each learning rate
    (NaN and diverged=True where the weights blew up)."""
    import keras

    results = []
    for lr in learning_rates:
        keras.utils.set_random_seed(seed)
        model = build_mlp(x.shape[1], activation, seed=seed)
        before = dead_fraction(model, x[:2000])
        train(model, x, y, optimizer=keras.optimizers.SGD(lr), epochs=epochs)
        diverged = not all(np.isfinite(w).all() for w in model.get_weights())
        results.append({"learning_rate": lr, "dead_before": before, "diverged": diverged,
                        "dead_after": float("nan") if diverged else dead_fraction(model, x[:2000])})
    return results


def selu_self_normalization(x, *, depth=20, width=256, seed=0):
    """Mean and variance of the activations per layer of a deep SELU net (LeCun normal) and a tanh one."""
    import keras

    stats = {}
    for name, init in (("selu", "lecun_normal"), ("tanh", "lecun_normal"), ("relu", "lecun_normal")):
        keras.utils.set_random_seed(seed)
        h, means, variances = x, [], []
        for _ in range(depth):
            layer = keras.layers.Dense(width, activation=name, kernel_initializer=init)
            h = layer(h).numpy()
            means.append(float(h.mean()))
            variances.append(float(h.var()))
        stats[name] = (np.array(means), np.array(variances))
    return stats


def run(*, folder=None, small=False, seed=0):
    import keras
    import matplotlib.pyplot as plt

    folder = experiment_folder(folder, "activations")
    limit, epochs = (2000, 1) if small else (10000, 3)
    arrays = load_arrays("fashion_mnist", limit=limit, seed=seed)
    (x, y), (x_test, y_test) = arrays["train"], arrays["test"]
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    xs, xs_test = (x - mean) / std, (x_test - mean) / std

    z, fz = curves()
    selu_stats = selu_self_normalization(xs[:512], depth=10 if small else 20)
    lrs = (0.01, 0.1, 0.5) if small else (0.01, 0.1, 0.3, 0.5, 1.0)
    dying = {a: dying_relu(x, y, lrs, activation=a, seed=seed) for a in ("relu", "leaky_relu")}
    accuracy = {}
    for name in NAMES:
        keras.utils.set_random_seed(seed)
        model = build_mlp(x.shape[1], name, seed=seed)
        accuracy[name] = train(model, xs, y, optimizer=keras.optimizers.Adam(1e-3), epochs=epochs,
                               x_test=xs_test, y_test=y_test)[1]

    print_table(f"activations: MLP 784-128-128-128-10, Adam 1e-3, {epochs} epoch(s) on {limit} Fashion-MNIST images",
                ["activation", "test acc", "f'(0-)", "f'(0+)", "f'(-3)"],
                [[n, accuracy[n], fz[n][1][399], fz[n][1][401], fz[n][1][100]] for n in NAMES])
    print_table("dying ReLU: share of hidden units dead on 2000 training images, plain SGD, 1 epoch",
                ["learning rate", "ReLU before", "ReLU after", "leaky ReLU after"],
                [[r["learning_rate"], r["dead_before"], "diverged" if r["diverged"] else r["dead_after"],
                  "diverged" if l["diverged"] else l["dead_after"]]
                 for r, l in zip(dying["relu"], dying["leaky_relu"])])
    means, variances = selu_stats["selu"]
    print(f"  SELU, {len(means)} layers of LeCun-normal weights: last layer mean {means[-1]:.3f}, "
          f"variance {variances[-1]:.3f} (tanh: {selu_stats['tanh'][1][-1]:.3f}, "
          f"relu: {selu_stats['relu'][1][-1]:.3g})")

    pngs = []
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    for name in NAMES:
        axes[0].plot(z, fz[name][0], label=name)
        axes[1].plot(z, fz[name][1], label=name)
    axes[0].set_title("f(z)")
    axes[0].set_ylim(-2, 4)
    axes[1].set_title("f′(z) by GradientTape (sign: 0 a.e.)")
    for name, (m, v) in selu_stats.items():
        layers = np.arange(1, len(m) + 1)
        axes[2].plot(layers, v, "o-", ms=3, label=f"{name}: variance")
        axes[2].plot(layers, m, "s--", ms=3, label=f"{name}: mean")
    axes[2].axhline(1, color="grey", lw=0.8)
    axes[2].axhline(0, color="grey", lw=0.8)
    axes[2].set_title("self-normalization: activation mean/variance per layer (LeCun normal)", fontsize=9)
    axes[2].set_xlabel("layer")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    pngs.append(save(fig, os.path.join(folder, "curves_and_derivatives.png")))

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for act, results in dying.items():
        axes[0].plot([r["learning_rate"] for r in results], [r["dead_after"] for r in results], "o-", label=act)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("SGD learning rate")
    axes[0].set_ylabel("share of dead hidden units")
    axes[0].set_title("dying ReLU after one epoch (dead: output 0 for all 2000 images)", fontsize=9)
    axes[0].grid(alpha=0.3)
    axes[0].legend()
    axes[1].bar(NAMES, [accuracy[n] for n in NAMES], color="tab:blue")
    for i, n in enumerate(NAMES):
        axes[1].text(i, accuracy[n] + 0.01, f"{accuracy[n]:.3f}", ha="center", fontsize=8)
    axes[1].set_ylim(0, 1)
    axes[1].set_title(f"Fashion-MNIST test accuracy, {epochs} epoch(s)", fontsize=9)
    axes[1].tick_params(axis="x", rotation=30)
    pngs.append(save(fig, os.path.join(folder, "dying_relu_and_accuracy.png")))
    for png in pngs:
        print(f"wrote {png}")
    return {"accuracy": accuracy, "dying": dying, "selu": selu_stats, "curves": fz, "pngs": pngs}
