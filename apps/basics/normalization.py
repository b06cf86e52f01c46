"""Experiment: input standardization and batch normalization.

Input standardization uses statistics of the TRAINING set only, and applies the same
transformation to the validation and test sets:

  μ = mean(x_train),  σ = std(x_train)  (per feature)    x' = (x - μ) / σ   for every split

(computing μ, σ on the test set would leak it into the model, and would not be possible for
a single example at prediction time).

Batch normalization (Ioffe & Szegedy 2015, "Batch normalization: accelerating deep network
training by reducing internal covariate shift"), per feature — per channel for a convolution,
where the statistics run over the batch and both spatial axes:

  training    μ_B = 1/m Σ x_i,  σ²_B = 1/m Σ (x_i - μ_B)²
              x̂ = (x - μ_B) / √(σ²_B + ε),   y = γ x̂ + β
              μ_run ← ρ μ_run + (1 - ρ) μ_B,  σ²_run ← ρ σ²_run + (1 - ρ) σ²_B
  inference   y = γ (x - μ_run) / √(σ²_run + ε) + β

γ and β are learned; μ_run, σ²_run are running averages (momentum ρ), not learned. Keras'
defaults are ρ = 0.99, ε = 1e-3, γ = 1, β = 0, μ_run = 0, σ²_run = 1, and like Keras we average
the biased batch variance (PyTorch averages the unbiased one, m/(m-1) σ²_B).

The experiment trains a deep sigmoid MLP (the setting of the paper's MNIST experiment) with
and without batch normalization after every hidden Dense layer, same SGD learning rate.
"""

import os

import keras
import numpy as np

from apps.basics.common import digits_arrays, experiment_folder, load_arrays, print_table, save, train_loop


def fit_standardizer(x_train):
    """Per-feature mean and std of the training set (a std of 0, a constant feature, becomes 1)."""
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    return mean, np.where(std == 0, 1.0, std).astype(x_train.dtype)


def standardize_splits(x_train, *others):
    """Training set and every other split transformed with the training set's statistics."""
    mean, std = fit_standardizer(x_train)
    return tuple((x - mean) / std for x in (x_train, *others))


@keras.saving.register_keras_serializable(package="basics")
class ScratchBatchNorm(keras.layers.Layer):
    """Batch normalization over the last axis, written from the equations in the module docstring."""

    def __init__(self, momentum=0.99, epsilon=1e-3, **kwargs):
        super().__init__(**kwargs)
        self.momentum, self.epsilon = float(momentum), float(epsilon)

    def build(self, input_shape):
        channels = (input_shape[-1],)
        self.gamma = self.add_weight(shape=channels, initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=channels, initializer="zeros", name="beta")
        self.moving_mean = self.add_weight(shape=channels, initializer="zeros", trainable=False, name="moving_mean")
        self.moving_variance = self.add_weight(shape=channels, initializer="ones", trainable=False,
                                               name="moving_variance")

    def call(self, x, training=False):
        ops = keras.ops
        if training:
            axes = tuple(range(len(x.shape) - 1))  # batch (and height, width): one statistic per channel
            mean = ops.mean(x, axis=axes)
            variance = ops.mean(ops.square(x - mean), axis=axes)
            rho = self.momentum
            self.moving_mean.assign(rho * self.moving_mean + (1 - rho) * mean)
            self.moving_variance.assign(rho * self.moving_variance + (1 - rho) * variance)
        else:
            mean, variance = self.moving_mean, self.moving_variance
        x_hat = (x - mean) / ops.sqrt(variance + self.epsilon)
        return self.gamma * x_hat + self.beta

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "epsilon": self.epsilon}


def compare_with_keras(x_batches, *, momentum=0.9, epsilon=1e-3, seed=0):
    """Both layers with the same random γ, β, fed the same batches in training mode (updating the moving
    statistics), then in inference mode. Returns the outputs, moving statistics and γ, β of both."""
    ours, theirs = ScratchBatchNorm(momentum, epsilon), keras.layers.BatchNormalization(momentum=momentum,
                                                                                        epsilon=epsilon)
    shape = x_batches[0].shape
    ours.build(shape)
    theirs.build(shape)
    rng = np.random.default_rng(seed)
    gamma, beta = rng.uniform(0.5, 2, shape[-1]).astype(np.float32), rng.normal(size=shape[-1]).astype(np.float32)
    for layer in (ours, theirs):
        layer.gamma.assign(gamma)
        layer.beta.assign(beta)
    result = {"training": [], "gamma": gamma, "beta": beta}
    for batch in x_batches:
        result["training"].append((ours(batch, training=True).numpy(), theirs(batch, training=True).numpy()))
    result["inference"] = (ours(x_batches[0], training=False).numpy(), theirs(x_batches[0], training=False).numpy())
    result["moving_mean"] = (ours.moving_mean.numpy(), theirs.moving_mean.numpy())
    result["moving_variance"] = (ours.moving_variance.numpy(), theirs.moving_variance.numpy())
    return result


def deep_mlp(input_dim, *, batch_norm, depth=8, width=64, seed=0):
    """`depth` sigmoid layers of `width` units (Glorot init); with batch_norm, Dense → BN → sigmoid."""
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((input_dim,))]
    for i in range(depth):
        layers.append(keras.layers.Dense(width, use_bias=not batch_norm, name=f"dense{i + 1}"))  # β replaces b
        if batch_norm:
            layers.append(ScratchBatchNorm(name=f"bn{i + 1}"))
        layers.append(keras.layers.Activation("sigmoid"))
    layers.append(keras.layers.Dense(10, name="logits"))
    return keras.Sequential(layers)


def with_and_without(x, y, x_test, y_test, *, epochs, learning_rate=0.1, batch_size=64, depth=8, seed=0):
    """Per model (without / with BN): the mean training-batch cross-entropy of every epoch (in training mode,
    i.e. with batch statistics, as Keras reports it) and the test accuracy at the end in inference mode
    (running averages)."""
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    results = {}
    for batch_norm in (False, True):
        model = deep_mlp(x.shape[1], batch_norm=batch_norm, depth=depth, seed=seed)
        run = train_loop(model, x, y, loss_fn=loss_fn, optimizer=keras.optimizers.SGD(learning_rate),
                         batch_size=batch_size, epochs=epochs, seed=seed)
        steps = len(run["step_loss"]) // epochs
        logits = model.predict(x_test, verbose=0, batch_size=1024)
        results["with BN" if batch_norm else "without BN"] = {
            "epoch_loss": run["step_loss"][:steps * epochs].reshape(epochs, steps).mean(axis=1),
            "test_accuracy": float((logits.argmax(axis=1) == y_test).mean())}
    return results


def run(*, folder=None, small=False, seed=0):
    import matplotlib.pyplot as plt

    folder = experiment_folder(folder, "normalization")
    rng = np.random.default_rng(seed)
    # The check: dense features and conv feature maps (per channel), shifted and scaled away from N(0, 1).
    checks = {}
    for name, shape in (("dense (32, 16)", (32, 16)), ("conv (8, 6, 6, 4)", (8, 6, 6, 4))):
        batches = [(rng.normal(3, 2, shape) * rng.uniform(0.1, 5, shape[-1])).astype(np.float32) for _ in range(5)]
        r = compare_with_keras(batches, seed=seed)
        checks[name] = [max(float(np.max(np.abs(a - b))) for a, b in r["training"]),
                        float(np.max(np.abs(np.subtract(*r["inference"])))),
                        float(np.max(np.abs(np.subtract(*r["moving_mean"])))),
                        float(np.max(np.abs(np.subtract(*r["moving_variance"]))))]
    print_table("ScratchBatchNorm vs keras.layers.BatchNormalization (momentum 0.9, ε 1e-3, random γ, β; 5 training "
                "batches, then inference): largest |difference|",
                ["input", "training outputs", "inference output", "moving mean", "moving variance"],
                [[k, *v] for k, v in checks.items()])

    if small:
        (x, y), (x_test, y_test) = digits_arrays(standardize=False)
        data_name, epochs = "8x8 digits (1,437 images)", 10
    else:
        arrays = load_arrays("fashion_mnist", limit=10000, seed=seed)
        (x, y), (x_test, y_test) = arrays["train"], arrays["test"]
        data_name, epochs = f"Fashion-MNIST ({len(x)} images)", 10
    x_std, x_test_std = standardize_splits(x, x_test)
    print_table("input standardization with the training set's per-pixel mean and std (averages over pixels)",
                ["split", "mean before", "std before", "mean after", "std after"],
                [[split, float(a.mean()), float(a.std(axis=0).mean()), float(b.mean()), float(b.std(axis=0).mean())]
                 for split, a, b in (("train", x, x_std), ("test", x_test, x_test_std))])
    results = with_and_without(x_std, y, x_test_std, y_test, epochs=epochs, seed=seed)
    print_table(f"8 sigmoid layers of 64 units on standardized {data_name}, SGD η = 0.1, batch 64: mean training "
                "cross-entropy per epoch; test accuracy in inference mode (running averages)",
                ["model", "epoch 1", f"epoch {epochs // 2}", f"epoch {epochs}", "test accuracy"],
                [[name, r["epoch_loss"][0], r["epoch_loss"][epochs // 2 - 1], r["epoch_loss"][-1], r["test_accuracy"]]
                 for name, r in results.items()])

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, r in results.items():
        ax.plot(np.arange(1, epochs + 1), r["epoch_loss"], "o-", label=f"{name} (test acc {r['test_accuracy']:.3f})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean training cross-entropy")
    ax.set_title(f"8 sigmoid layers on {data_name}: batch normalization trains, plain SGD is stuck", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    png = save(fig, os.path.join(folder, "batch_norm_training.png"))
    print(f"wrote {png}")
    return {"checks": checks, "results": results, "pngs": [png]}
