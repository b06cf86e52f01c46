"""Experiment 6: regularization on a deliberately small training set.

The same MLP (784-256-256-10, SGD + momentum) is trained five ways on a few hundred
Fashion-MNIST images and watched on a validation split:

  none            fits the training set, validation loss turns up: variance
  L2              loss + λ‖W‖²: shrinks all weights smoothly, almost none exactly to 0
  L1              loss + λ‖W‖₁, applied as its proximal step (soft-thresholding
                  w ← sign(w)·max(|w| - ηλ, 0) after every update, a Keras constraint): the
                  proximal step sets small weights exactly to 0 — sparsity. (The plain
                  subgradient λ·sign(w) only makes weights jitter around 0, never equal to it.)
  dropout         p = 0.5 after every hidden layer
  early stopping  no penalty, stop when the validation loss has not improved for `patience`
                  epochs and keep the best weights
"""

import os

import keras
import numpy as np

from apps.basics.common import experiment_folder, load_arrays, print_table, save

VARIANTS = ("none", "l2", "l1", "dropout", "early_stopping")


@keras.saving.register_keras_serializable(package="basics")
class SoftThreshold(keras.constraints.Constraint):
    """The proximal operator of t‖w‖₁: w ← sign(w)·max(|w| - t, 0); with t = ηλ after each SGD step
    this is proximal gradient descent on loss + λ‖w‖₁."""

    def __init__(self, threshold):
        self.threshold = float(threshold)

    def __call__(self, w):
        return keras.ops.sign(w) * keras.ops.maximum(keras.ops.abs(w) - self.threshold, 0.0)

    def get_config(self):
        return {"threshold": self.threshold}


def build_mlp(input_dim, variant, *, width=256, learning_rate=0.01, l2=1e-3, l1=1e-3, dropout=0.5):
    dense_kwargs = {}
    if variant == "l2":
        dense_kwargs["kernel_regularizer"] = keras.regularizers.L2(l2)
    elif variant == "l1":
        dense_kwargs["kernel_constraint"] = SoftThreshold(learning_rate * l1)
    layers = [keras.Input((input_dim,))]
    for i in range(2):
        layers.append(keras.layers.Dense(width, activation="relu", name=f"hidden{i + 1}", **dense_kwargs))
        if variant == "dropout":
            layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(10, name="logits", **dense_kwargs))
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def weight_sparsity(model):
    """Share of kernel weights that are exactly 0, and that are below 1e-3 in magnitude."""
    kernels = np.concatenate([layer.kernel.numpy().ravel() for layer in model.layers
                              if isinstance(layer, keras.layers.Dense)])
    return float((kernels == 0).mean()), float((np.abs(kernels) < 1e-3).mean()), kernels


def _accuracy_and_loss(model, x, y):
    logits = model.predict(x, verbose=0, batch_size=1024)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, logits)
    return float((logits.argmax(axis=1) == y).mean()), float(loss)


def train_variant(variant, data, *, epochs, patience=5, seed=0, **kwargs):
    (x, y), (x_val, y_val), (x_test, y_test) = data
    keras.utils.set_random_seed(seed)
    model = build_mlp(x.shape[1], variant, **kwargs)
    callbacks = []
    if variant == "early_stopping":
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience,
                                                       restore_best_weights=True))
    history = model.fit(x, y, validation_data=(x_val, y_val), epochs=epochs, batch_size=32, verbose=0,
                        callbacks=callbacks).history
    zeros, small, kernels = weight_sparsity(model)
    train_acc = _accuracy_and_loss(model, x, y)[0]
    test_acc, test_loss = _accuracy_and_loss(model, x_test, y_test)  # cross-entropy only, without the penalty
    stopped = len(history["loss"])
    return {"history": history, "epochs_run": stopped, "train_accuracy": float(train_acc),
            "val_accuracy_best": float(max(history["val_accuracy"])), "test_accuracy": float(test_acc),
            "test_loss": float(test_loss), "exact_zeros": zeros, "below_1e-3": small, "kernels": kernels}


def small_data(train_size, seed=0, val_size=2000):
    arrays = load_arrays("fashion_mnist", limit=max(train_size, val_size), seed=seed)
    (x, y), (x_val, y_val), (x_test, y_test) = arrays["train"], arrays["val"], arrays["test"]
    return (x[:train_size], y[:train_size]), (x_val[:val_size], y_val[:val_size]), (x_test, y_test)


def run(*, folder=None, small=False, seed=0):
    import matplotlib.pyplot as plt

    folder = experiment_folder(folder, "regularization")
    train_size, epochs = (300, 25) if small else (1000, 100)
    data = small_data(train_size, seed=seed)
    results = {v: train_variant(v, data, epochs=epochs, patience=5 if small else 10, seed=seed) for v in VARIANTS}

    print_table(f"regularization: MLP 784-256-256-10 on {train_size} Fashion-MNIST images, up to {epochs} epochs",
                ["variant", "epochs", "train acc", "best val acc", "test acc", "test loss", "gap (train-test)",
                 "exact zeros", "|w|<1e-3"],
                [[v, r["epochs_run"], r["train_accuracy"], r["val_accuracy_best"], r["test_accuracy"], r["test_loss"],
                  r["train_accuracy"] - r["test_accuracy"], r["exact_zeros"], r["below_1e-3"]]
                 for v, r in results.items()])

    pngs = []
    fig, axes = plt.subplots(1, len(VARIANTS), figsize=(4 * len(VARIANTS), 3.8), sharey=True)
    for ax, (variant, r) in zip(axes, results.items()):
        h = r["history"]
        epochs_axis = np.arange(1, len(h["loss"]) + 1)
        ax.plot(epochs_axis, h["loss"], label="train loss")
        ax.plot(epochs_axis, h["val_loss"], label="validation loss")
        ax.set_title(f"{variant}: test acc {r['test_accuracy']:.3f}", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylim(0, 2.5)
        ax.grid(alpha=0.3)
    axes[0].legend()
    pngs.append(save(fig, os.path.join(folder, "train_validation_curves.png")))

    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.linspace(-0.15, 0.15, 121)
    for variant in ("none", "l2", "l1"):
        ax.hist(results[variant]["kernels"], bins=bins, histtype="step", lw=1.3,
                label=f"{variant}: {results[variant]['exact_zeros']:.1%} exactly 0")
    ax.set_yscale("log")
    ax.set_xlabel("weight value")
    ax.set_title("weight histograms: L1 (proximal) makes weights exactly 0", fontsize=10)
    ax.legend()
    pngs.append(save(fig, os.path.join(folder, "weight_sparsity.png")))
    for png in pngs:
        print(f"wrote {png}")
    for r in results.values():
        r.pop("kernels")
    return {"results": results, "pngs": pngs}
