"""Experiment: gradient clipping by global norm.

Backpropagation multiplies the error by every layer's Jacobian, so through L layers whose Jacobians
have norms above 1 the gradient grows like a power of L: it explodes (the recurrent case, where the
same matrix is multiplied T times, is the classic one: Pascanu, Mikolov & Bengio, "On the difficulty of
training recurrent neural networks", 2013). One such gradient times η throws the weights so far that
the next loss is larger still, and a few steps later it overflows.

Clipping by the global norm rescales all gradients together when their joint norm exceeds c:

  ‖g‖ = √(Σ_tensors Σ g²),   g ← g · c / max(‖g‖, c)

The direction is kept, only the length is capped, so a plain SGD step moves the weights by at most
η·c: ‖Δθ‖ = η·min(‖g‖, c). (`tf.clip_by_global_norm`, Keras' `global_clipnorm=`; clipping each
tensor or each value separately would change the direction.)

The experiment: a deep ReLU MLP whose He-normal weights are scaled up by `gain` (each layer then
multiplies the signal's standard deviation by ≈ gain, the network's output and gradient by ≈ gainᴸ),
fitted to the digits' one-hot targets with the squared error and plain SGD, with and without clipping.
"""

import os

import keras
import numpy as np

from apps.basics.common import digits_arrays, experiment_folder, print_table, save, train_loop


def clip_by_global_norm(grads, clip_norm):
    """g · c / max(‖g‖, c) over the list of gradient tensors together (the equation above)."""
    import tensorflow as tf

    norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(g)) for g in grads]))
    factor = clip_norm / tf.maximum(norm, clip_norm)
    return [g * factor for g in grads]


def exploding_mlp(input_dim, outputs=10, *, depth=10, width=64, gain=1.4, seed=0):
    """ReLU MLP with He-normal kernels times `gain` (> 1: every layer amplifies), biases 0."""
    keras.utils.set_random_seed(seed)
    init = keras.initializers.VarianceScaling(2.0 * gain ** 2, mode="fan_in", distribution="untruncated_normal",
                                              seed=seed)
    layers = [keras.Input((input_dim,))]
    layers += [keras.layers.Dense(width, activation="relu", kernel_initializer=init) for _ in range(depth)]
    layers.append(keras.layers.Dense(outputs, kernel_initializer=init))
    return keras.Sequential(layers)


def train(x, t, *, clip_norm, learning_rate, epochs, batch_size=32, seed=0, **model_kwargs):
    """SGD on the exploding MLP, clipped by global norm `clip_norm` (None: not clipped): `train_loop`'s result."""
    model = exploding_mlp(x.shape[1], t.shape[1], seed=seed, **model_kwargs)
    transform = None if clip_norm is None else (lambda grads: clip_by_global_norm(grads, clip_norm))
    return train_loop(model, x, t, loss_fn=keras.losses.MeanSquaredError(),
                      optimizer=keras.optimizers.SGD(learning_rate), batch_size=batch_size, epochs=epochs,
                      seed=seed, evals_per_epoch=4, transform_gradients=transform)


def applied_update(x, t, *, clip_norm, learning_rate, seed=0, **model_kwargs):
    """One clipped SGD step on a batch: (gradient norm before clipping, norm of the weight change)."""
    import tensorflow as tf

    model = exploding_mlp(x.shape[1], t.shape[1], seed=seed, **model_kwargs)
    before = [w.numpy().astype(np.float64) for w in model.trainable_variables]
    with tf.GradientTape() as tape:
        loss = keras.losses.MeanSquaredError()(t, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    raw_norm = float(tf.linalg.global_norm(grads))
    keras.optimizers.SGD(learning_rate).apply_gradients(zip(clip_by_global_norm(grads, clip_norm),
                                                            model.trainable_variables))
    change = np.sqrt(sum(np.sum((w.numpy() - b) ** 2) for w, b in zip(model.trainable_variables, before)))
    return raw_norm, float(change)


def run(*, folder=None, small=False, seed=0):
    import matplotlib.pyplot as plt

    folder = experiment_folder(folder, "clipping")
    (x, y), _ = digits_arrays()
    t = np.eye(10, dtype=np.float32)[y]
    lr, epochs = 0.01, (2 if small else 10)
    clip_norms = (10.0, 1.0) if small else (100.0, 10.0, 1.0, 0.1)
    settings = {"none": (None, lr), **{f"c = {c:g}": (c, lr) for c in clip_norms},  # label: (clip norm, η)
                f"none, η = {lr / 10:g}": (None, lr / 10)}  # the other cure: a smaller rate throughout
    runs = {label: train(x, t, clip_norm=c, learning_rate=rate, epochs=epochs, seed=seed)
            for label, (c, rate) in settings.items()}
    raw, change = applied_update(x[:32], t[:32], clip_norm=1.0, learning_rate=lr, seed=seed)
    rows = []
    for label, r in runs.items():
        (c, rate), curve, norms = settings[label], r["curve"][:, 2], r["grad_norm"]
        rows.append([label, rate, "diverged" if r["diverged"] else "ok", curve[0],
                     float("nan") if r["diverged"] else curve[-1], float(np.max(norms[np.isfinite(norms)])),
                     float(np.mean(norms > c)) if c is not None else float("nan"), len(norms)])
    print_table(f"10 ReLU layers of 64 (He init x 1.4) on 1,437 digits, squared error, SGD, batch 32, {epochs} epochs",
                ["clipping", "η", "status", "initial loss", "final loss", "largest finite ‖g‖ (before clipping)",
                 "share of steps clipped", "steps run"], rows)
    print(f"one clipped step (c = 1, η = {lr}): ‖g‖ = {raw:.4g} before clipping, ‖Δθ‖ = {change:.6g} ≤ η·c = {lr}")

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for label, r in runs.items():
        label = label + (" (diverged)" if r["diverged"] else "")
        axes[0].semilogy(r["curve"][:, 0] / len(x), r["curve"][:, 2], "o-", ms=3, label=label)
        axes[1].semilogy(np.arange(1, len(r["grad_norm"]) + 1), r["grad_norm"], lw=0.8, label=label)
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("training loss (log)")
    axes[0].set_title(f"η = {lr}: without clipping the loss overflows within steps; clipped, it falls", fontsize=9)
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("global gradient norm before clipping (log)")
    axes[1].set_title("gradient norm per step (a curve that stops: the next one was non-finite)", fontsize=9)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    png = save(fig, os.path.join(folder, "clipping.png"))
    print(f"wrote {png}")
    return {"runs": runs, "one_step": (raw, change), "pngs": [png]}
