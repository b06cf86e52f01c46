"""Experiment 1: Rosenblatt's perceptron, its limit (XOR), and the MLP that passes it.

The perceptron criterion is J(w) = -Σ_{i∈M} yᵢ wᵀxᵢ over the set M of
misclassified samples (labels y ∈ {-1, +1}, bias folded into w). Its gradient
step is w ← w + η Σ_{i∈M} yᵢ xᵢ: only misclassified samples move the weights.
`layers.Perceptron.perceptron_update` does exactly that step; on linearly
separable data it reaches zero errors in finitely many steps (Novikoff), on XOR
no w has zero errors, so the errors never reach zero. One hidden layer
(trained by backprop) solves XOR.
"""

import os

import numpy as np

from apps.basics.common import experiment_folder, print_table, save


def separable_data(n=100, seed=0, margin=0.05):
    """Two Gaussian clouds on either side of a random line, at least `margin` from it."""
    rng = np.random.default_rng(seed)
    normal = rng.normal(size=2)
    normal /= np.linalg.norm(normal)
    x = rng.uniform(-2, 2, size=(4 * n, 2))
    distance = x @ normal - 0.3
    keep = np.abs(distance) > margin
    x, distance = x[keep][:n], distance[keep][:n]
    return x.astype(np.float32), np.where(distance > 0, 1.0, -1.0).astype(np.float32)


def xor_data(n=100, seed=0, noise=0.15):
    """Points around the four corners (±1, ±1); label +1 where x₁·x₂ < 0 (XOR of the signs)."""
    rng = np.random.default_rng(seed)
    corners = np.array([[1, 1], [-1, -1], [1, -1], [-1, 1]], dtype=np.float32)
    x = corners[np.arange(n) % 4] + rng.normal(scale=noise, size=(n, 2))
    y = np.where(np.arange(n) % 4 >= 2, 1.0, -1.0)
    return x.astype(np.float32), y.astype(np.float32)


def perceptron_criterion(layer, x, y):
    """J = -Σ_{misclassified} yᵢ (wᵀxᵢ + b) ≥ 0, and the number of misclassified samples."""
    w, b = layer.kernel.numpy()[:, 0], float(layer.bias.numpy()[0])
    score = x @ w + b
    wrong = y * np.where(score >= 0, 1.0, -1.0) < 0
    return float(-(y[wrong] * score[wrong]).sum()), int(wrong.sum())


def train_perceptron(x, y, *, epochs=100, learning_rate=0.1, seed=0):
    """Batch perceptron rule with `layers.Perceptron`; returns (layer, errors per epoch, criterion per epoch).

    Epoch 0 is the state before training; training stops at the first epoch with zero errors.
    """
    import keras

    from layers import Perceptron

    keras.utils.set_random_seed(seed)
    layer = Perceptron(1)
    layer.build((None, x.shape[1]))
    errors, criterion = [], []
    for _ in range(epochs + 1):
        j, e = perceptron_criterion(layer, x, y)
        errors.append(e)
        criterion.append(j)
        if e == 0:
            break
        layer.perceptron_update(x, y[:, None], learning_rate=learning_rate)
    return layer, np.array(errors), np.array(criterion)


def train_xor_mlp(x, y, *, hidden=8, steps=400, learning_rate=0.05, seed=0):
    """One tanh hidden layer + sigmoid output, trained by backprop (Adam, full batch)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(hidden, activation="tanh"),
                              keras.layers.Dense(1, activation="sigmoid")])
    optimizer = keras.optimizers.Adam(learning_rate)
    loss_fn = keras.losses.BinaryCrossentropy()
    targets = tf.constant((y[:, None] + 1) / 2)
    inputs = tf.constant(x)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn(targets, model(inputs, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    losses = [float(step()) for _ in range(steps)]
    predictions = np.where(model.predict(x, verbose=0)[:, 0] >= 0.5, 1.0, -1.0)
    return model, np.array(losses), float((predictions == y).mean())


def _boundary(ax, predict, x, y, title):
    grid = np.linspace(-2.2, 2.2, 200, dtype=np.float32)
    gx, gy = np.meshgrid(grid, grid)
    z = predict(np.stack([gx.ravel(), gy.ravel()], axis=1)).reshape(gx.shape)
    ax.contourf(gx, gy, z, levels=[-2, 0, 2], colors=["#f4c7c3", "#c6dbef"], alpha=0.8)
    ax.contour(gx, gy, z, levels=[0], colors="k", linewidths=1)
    ax.scatter(*x[y < 0].T, c="#d62728", s=12, marker="o", label="y = -1")
    ax.scatter(*x[y > 0].T, c="#1f77b4", s=12, marker="s", label="y = +1")
    ax.set_xlim(-2.2, 2.2)
    ax.set_ylim(-2.2, 2.2)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)


def run(*, folder=None, small=False, seed=0):
    """Perceptron on separable data and on XOR, MLP on XOR; PNG of decision boundaries. Returns the figures."""
    import matplotlib.pyplot as plt

    n, epochs = (60, 50) if small else (200, 200)
    folder = experiment_folder(folder, "perceptron")
    x_sep, y_sep = separable_data(n, seed)
    x_xor, y_xor = xor_data(n, seed)
    sep_layer, sep_errors, sep_j = train_perceptron(x_sep, y_sep, epochs=epochs, seed=seed)
    xor_layer, xor_errors, xor_j = train_perceptron(x_xor, y_xor, epochs=epochs, seed=seed)
    mlp, mlp_losses, mlp_accuracy = train_xor_mlp(x_xor, y_xor, steps=200 if small else 400, seed=seed)

    results = {
        "separable_converged": bool(sep_errors[-1] == 0),
        "separable_epochs": int(len(sep_errors) - 1),
        "xor_converged": bool(xor_errors.min() == 0),
        "xor_min_errors": int(xor_errors.min()),
        "xor_final_errors": int(xor_errors[-1]),
        "xor_perceptron_accuracy": float(1 - xor_errors[-1] / len(y_xor)),
        "xor_mlp_accuracy": mlp_accuracy,
        "xor_mlp_final_loss": float(mlp_losses[-1]),
    }

    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2))
    sign = lambda layer: (lambda p: layer(p).numpy()[:, 0])
    _boundary(axes[0], sign(sep_layer), x_sep, y_sep,
              f"perceptron, separable: {sep_errors[-1]} errors after {len(sep_errors) - 1} epochs")
    _boundary(axes[1], sign(xor_layer), x_xor, y_xor,
              f"perceptron, XOR: {xor_errors[-1]} errors after {len(xor_errors) - 1} epochs")
    _boundary(axes[2], lambda p: mlp.predict(p, verbose=0, batch_size=8192)[:, 0] - 0.5, x_xor, y_xor,
              f"MLP 2-8-1 (tanh), XOR: accuracy {mlp_accuracy:.2f}")
    axes[2].legend(loc="lower left", fontsize=7)
    axes[3].plot(sep_errors, label="separable")
    axes[3].plot(xor_errors, label="XOR")
    axes[3].set_xlabel("epoch (batch perceptron rule)")
    axes[3].set_ylabel("misclassified samples")
    axes[3].set_title("errors per epoch", fontsize=9)
    axes[3].grid(alpha=0.3)
    axes[3].legend()
    png = save(fig, os.path.join(folder, "decision_boundaries.png"))

    print_table("perceptron vs XOR", ["data", "model", "epochs/steps", "errors", "accuracy", "converged"], [
        ["separable", "perceptron", len(sep_errors) - 1, int(sep_errors[-1]),
         1 - sep_errors[-1] / len(y_sep), results["separable_converged"]],
        ["XOR", "perceptron", len(xor_errors) - 1, int(xor_errors[-1]),
         results["xor_perceptron_accuracy"], results["xor_converged"]],
        ["XOR", "MLP 2-8-1", len(mlp_losses), int(round((1 - mlp_accuracy) * len(y_xor))), mlp_accuracy,
         mlp_accuracy == 1.0],
    ])
    print(f"  XOR: fewest errors in any epoch {results['xor_min_errors']} of {len(y_xor)} (never 0)")
    print(f"wrote {png}")
    results["pngs"] = [png]
    return results
