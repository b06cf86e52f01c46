"""Experiment 4: initialization and depth.

A deep MLP (10-20 dense layers) is initialized four ways and looked at before
training: the variance of every hidden layer's activations on a data batch and
the spread of every layer's weight gradient.

  zero          all weights 0: every unit of a layer computes the same thing and gets the same
                gradient (here all gradients but the output bias are 0), so the symmetry is never broken
  small random  N(0, 0.01²): each layer multiplies the signal by ~0.01·√n, activations and
                gradients vanish geometrically with depth
  Xavier        Var(w) = 2/(fan_in + fan_out) (Glorot & Bengio): keeps tanh's variance roughly
                constant; under ReLU it halves per layer
  He            Var(w) = 2/fan_in (He et al.): keeps ReLU's variance constant across depth
"""

import os

import numpy as np

from apps.basics.common import experiment_folder, load_arrays, print_table, save

INITIALIZERS = {
    "zero": lambda seed: "zeros",
    "small random": lambda seed: {"class_name": "RandomNormal", "config": {"stddev": 0.01, "seed": seed}},
    "xavier": lambda seed: {"class_name": "GlorotNormal", "config": {"seed": seed}},
    "he": lambda seed: {"class_name": "HeNormal", "config": {"seed": seed}},
}


def standardized_inputs(name="fashion_mnist", limit=2000, seed=0):
    """Flat images with every pixel standardized over the training set (constant pixels stay 0)."""
    arrays = load_arrays(name, limit=limit, seed=seed)
    (x, y), (x_test, y_test) = arrays["train"], arrays["test"]
    mean, std = x.mean(axis=0), x.std(axis=0)
    std[std == 0] = 1.0
    return ((x - mean) / std, y), ((x_test - mean) / std, y_test)


def build_mlp(input_dim, *, depth, width, activation, init, classes=10, seed=0):
    """`depth` hidden Dense layers of `width` units, every kernel initialized by `init`, biases zero."""
    import keras

    layers = [keras.Input((input_dim,))]
    for i in range(depth):
        layers.append(keras.layers.Dense(width, activation=activation, name=f"hidden{i + 1}",
                                         kernel_initializer=INITIALIZERS[init](seed + i)))
    layers.append(keras.layers.Dense(classes, kernel_initializer=INITIALIZERS[init](seed + depth), name="logits"))
    return keras.Sequential(layers)


def layer_statistics(model, x, y):
    """Per hidden layer: activation variance (over all units and samples together) and the std of the kernel gradient
    of the cross-entropy on (x, y); plus the input's variance and the gradient std of the output layer."""
    import tensorflow as tf

    x = tf.constant(x)
    dense = model.layers
    with tf.GradientTape() as tape:
        h, activations = x, []
        for layer in dense[:-1]:
            h = layer(h)
            activations.append(h)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, dense[-1](h)))
    grads = tape.gradient(loss, [layer.kernel for layer in dense])
    return {"input_variance": float(np.var(x.numpy())),
            "activation_variance": np.array([float(np.var(a.numpy())) for a in activations]),
            "gradient_std": np.array([float(np.std(g.numpy())) for g in grads]),
            "loss": float(loss)}


def distinct_units(kernel, decimals=6):
    """How many different weight columns (units) a layer has: 1 means perfectly symmetric."""
    return len({tuple(col) for col in np.round(np.asarray(kernel).T, decimals)})


def run(*, folder=None, small=False, seed=0):
    import keras
    import matplotlib.pyplot as plt

    folder = experiment_folder(folder, "initialization")
    depth, width, limit, epochs = (10, 64, 2000, 1) if small else (15, 128, 10000, 3)
    (x, y), (x_test, y_test) = standardized_inputs(limit=limit, seed=seed)
    batch = slice(0, 512)
    stats, rows = {}, []
    for activation in ("tanh", "relu"):
        for init in INITIALIZERS:
            keras.utils.set_random_seed(seed)
            model = build_mlp(x.shape[1], depth=depth, width=width, activation=activation, init=init, seed=seed)
            s = layer_statistics(model, x[batch], y[batch])
            model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
            model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
            s["test_accuracy"] = float(model.evaluate(x_test, y_test, verbose=0, batch_size=1024)[1])
            s["distinct_units"] = [distinct_units(layer.kernel.numpy()) for layer in model.layers[:-1]]
            stats[(activation, init)] = s
            rows.append([activation, init, s["activation_variance"][0] / s["input_variance"],
                         s["activation_variance"][-1] / s["input_variance"], s["gradient_std"][0],
                         s["gradient_std"][-1], min(s["distinct_units"]), s["test_accuracy"]])
    print_table(f"{depth}-layer MLPs of width {width} on Fashion-MNIST ({limit} training images, {epochs} epoch(s) "
                f"SGD+momentum); variances relative to the input's",
                ["activation", "init", "var(layer 1)", f"var(layer {depth})", "grad std (layer 1)",
                 "grad std (output)", "distinct units (after training)", "test acc"], rows)

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    depths = np.arange(1, depth + 1)
    for r, activation in enumerate(("tanh", "relu")):
        for init in INITIALIZERS:
            s = stats[(activation, init)]
            axes[r, 0].semilogy(depths, np.maximum(s["activation_variance"] / s["input_variance"], 1e-30), "o-",
                                ms=3, label=f"{init} (acc {s['test_accuracy']:.2f})")
            axes[r, 1].semilogy(np.arange(1, depth + 2), np.maximum(s["gradient_std"], 1e-30), "o-", ms=3, label=init)
        axes[r, 0].set_title(f"{activation}: activation variance / input variance (zero init: 0, drawn at 1e-30)",
                             fontsize=9)
        axes[r, 1].set_title(f"{activation}: std of ∂L/∂W per layer (vanishing ↔ small)", fontsize=9)
        for ax in axes[r]:
            ax.set_xlabel("layer")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    png = save(fig, os.path.join(folder, "activation_gradient_statistics.png"))
    print(f"wrote {png}")
    return {"stats": stats, "pngs": [png], "depth": depth}
