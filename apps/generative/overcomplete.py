"""Experiment: an overcomplete autoencoder copies everything unless something stops it.

An autoencoder with more code units than inputs (here 8x8 digits, 64 pixels -> 256 ReLU units -> 64
pixels) can represent the identity exactly (h = relu([x; -x]), x̂ = h⁺ - h⁻), so reconstruction error
alone gives it no reason to learn anything about digits: trained on digits it reconstructs *any* input,
noise included, with dense codes. Two ways to make it learn features (Goodfellow, Bengio & Courville,
Deep Learning, 14.2):

  sparse_l1   an L1 penalty λ Σ_j |h_j| on the code (keras' ActivityRegularization): few units may be
              active per input, so each unit must stand for something that recurs in the data;
  denoising   Gaussian noise on the input, the clean image as the target (Vincent et al. 2008): copying
              the input would copy the noise, so the net learns to pull inputs towards the digits.

(The app's `sparse_ae` model uses the KL sparsity penalty Σ_j KL(ρ ‖ ρ̂_j) on sigmoid codes instead; it
holds each unit's *mean* activation at ρ, which a short run meets by keeping every unit weakly on, so the
codes here are ReLU units under L1, which switches units off.)

The decoder's weight vectors (one 64-pixel image per code unit) are kept at unit norm: otherwise a
sparsity penalty is dodged by shrinking the codes and growing the decoder weights.

The "noise" inputs are images of independent Gaussian pixels with the training digits' per-pixel mean and
standard deviation (clipped to [0, 1]): not digits, but on the same pixels with the same spread, so a net
that copies what it was shown moving copies them too (the few pixels that are 0 in every training digit
were never seen varying, so no autoencoder trained on digits could copy noise there).
Error is reported as the fraction of variance unexplained, FVU = Σ‖x̂ - x‖² / Σ‖x - x̄‖²
(0: a perfect copy; 1: no better than answering the mean image).
"""

import os

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from apps.basics.common import print_table
from apps.generative.autoencoders import dense_encoder
from core import data, plots, training

CODE_UNITS = 256
VARIANTS = {  # name: what is added to the plain overcomplete autoencoder
    "plain": {},
    "sparse_l1": {"l1": 0.002},
    "denoising": {"noise": 0.3},
}


def digits_and_noise(seed=0, num_noise=500):
    """(training digits, test digits, noise images), flat float32 in [0, 1], shape (n, 64)."""
    (x, _), (x_test, _) = data.load_digits_arrays(size=8)
    x = x.reshape(len(x), -1).astype(np.float32) / 255.0
    x_test = x_test.reshape(len(x_test), -1).astype(np.float32) / 255.0
    rng = np.random.default_rng(seed)
    noise = x.mean(axis=0) + x.std(axis=0) * rng.standard_normal((num_noise, x.shape[1]))
    return x, x_test, np.clip(noise, 0.0, 1.0).astype(np.float32)


def build(variant, input_dim=64, code_units=CODE_UNITS, seed=0):
    """(autoencoder, encoder) of one variant; the autoencoder adds its penalty with `add_loss`."""
    options = VARIANTS[variant]
    keras.utils.set_random_seed(seed)
    encoder = dense_encoder((input_dim,), code_units, hidden=(), code_activation="relu")
    if "l1" in options:
        code = layers.ActivityRegularization(l1=options["l1"], name="l1_penalty")(encoder.output)
        encoder = keras.Model(encoder.input, code, name="encoder")

    images = keras.Input(shape=(input_dim,), name="images")
    x = layers.GaussianNoise(options["noise"], name="corruption")(images) if "noise" in options else images
    # One unit-norm image per code unit (rows of the kernel): a sparsity penalty cannot be dodged by scale.
    decoder = layers.Dense(input_dim, kernel_constraint=keras.constraints.UnitNorm(axis=1), name="decoder")
    return keras.Model(images, decoder(encoder(x)), name=variant), encoder


def train(model, x, *, steps, batch_size=64, learning_rate=3e-3, seed=0):
    """Adam on mean squared error to the clean input plus the model's penalties; returns the last losses.
    A plain loop rather than `fit`: thousands of tiny steps, where `fit`'s per-step overhead dominates."""
    optimizer = keras.optimizers.Adam(learning_rate)
    weights = model.trainable_variables
    optimizer.build(weights)

    @tf.function(input_signature=[tf.TensorSpec([None, x.shape[1]], tf.float32)])
    def step(batch):
        with tf.GradientTape() as tape:
            error = tf.reduce_mean(tf.square(model(batch, training=True) - batch))
            loss = error + tf.add_n(model.losses) if model.losses else error
        optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
        return error, loss

    rng = np.random.default_rng(seed)
    data_on_device = tf.constant(x)
    order = np.array([], np.int64)
    for _ in range(steps):
        if len(order) < batch_size:  # a new epoch: a fresh permutation
            order = np.concatenate([order, rng.permutation(len(x))])
        batch, order = order[:batch_size], order[batch_size:]
        error, loss = step(tf.gather(data_on_device, batch))
    return float(error), float(loss)


def fvu(model, x):
    """Fraction of variance unexplained by the reconstructions of x (no corruption: inference mode)."""
    recon = np.asarray(model(x, training=False))
    return float(np.sum((recon - x) ** 2) / np.sum((x - x.mean(axis=0)) ** 2))


def code_sparsity(encoder, x):
    """(share of near-zero code values, active units per input, Hoyer sparsity) of the codes of x.

    A code value is near zero below 10% of the largest code value on x (ReLU codes are exactly 0 there,
    sigmoid codes only small). Hoyer's measure (√n - ‖h‖₁/‖h‖₂) / (√n - 1) of each input's code vector h,
    averaged, does not depend on a threshold or on the codes' scale: 0 when all n units are equally
    active, 1 when a single unit is."""
    codes = np.asarray(encoder(x, training=False), np.float64)
    active = codes > 0.1 * codes.max()
    n = codes.shape[1]
    ratio = np.abs(codes).sum(axis=1) / np.maximum(np.sqrt((codes ** 2).sum(axis=1)), 1e-12)
    hoyer = (np.sqrt(n) - ratio) / (np.sqrt(n) - 1)
    return float(1.0 - active.mean()), float(active.sum(axis=1).mean()), float(hoyer.mean())


def measure(variant, x, x_test, noise, *, steps, seed=0):
    """Train one variant; its figures and the trained (autoencoder, encoder)."""
    model, encoder = build(variant, x.shape[1], seed=seed)
    train(model, x, steps=steps, seed=seed)
    near_zero, active, hoyer = code_sparsity(encoder, x_test)
    return {"fvu_digits": fvu(model, x_test), "fvu_noise": fvu(model, noise), "near_zero_codes": near_zero,
            "active_units": active, "hoyer": hoyer}, (model, encoder)


def _mosaic(vectors, columns=8):
    """8x8 images (columns of `vectors`) side by side with a 1-pixel gap, each scaled to [-1, 1] by its own
    largest |weight| (so every filter's pattern shows, whatever its norm)."""
    tiles = [v.reshape(8, 8) / max(np.abs(v).max(), 1e-12) for v in vectors.T]
    rows = -(-len(tiles) // columns)
    mosaic = np.full((9 * rows + 1, 9 * columns + 1), np.nan)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        mosaic[1 + 9 * r:9 * r + 9, 1 + 9 * c:9 * c + 9] = tile
    return mosaic


def filters_png(encoders, models, x_test, path, shown=40):
    """Per variant, the units most often active on the test digits: their encoder filters (weights into
    the unit) and their decoder images (what the unit adds to the reconstruction)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(encoders), figsize=(3.6 * len(encoders), 6.4), squeeze=False)
    for column, (variant, encoder) in enumerate(encoders.items()):
        codes = np.asarray(encoder(x_test))
        units = np.argsort(-(codes > 0.1 * codes.max()).mean(axis=0))[:shown]
        into = np.asarray(encoder.get_layer("code").kernel)[:, units]  # (64, shown)
        out_of = np.asarray(models[variant].get_layer("decoder").kernel)[units].T  # (64, shown)
        for row, (vectors, what) in enumerate(((into, "encoder filters"), (out_of, "decoder images"))):
            ax = axes[row, column]
            ax.imshow(_mosaic(vectors), cmap="gray", vmin=-1, vmax=1)
            ax.set_title(f"{variant}: {what}", fontsize=9)
            ax.axis("off")
    fig.suptitle(f"the {shown} code units most often active on the test digits (grey = 0)", fontsize=10)
    return plots.save_figure(fig, path)


def reconstructions_png(models, x_test, noise, path):
    """Four test digits and four noise images, and each variant's reconstructions of them."""
    inputs = np.concatenate([x_test[:4], noise[:4]])
    grid = [inputs] + [np.asarray(model(inputs, training=False)) for model in models.values()]
    titles = [f"digit {i + 1}" for i in range(4)] + [f"noise {i + 1}" for i in range(4)]
    titles += [f"{variant}" for variant in models for _ in range(8)]
    images = np.clip(np.concatenate(grid), 0.0, 1.0).reshape(-1, 8, 8, 1)
    return plots.image_grid(images, titles, path, columns=8,
                            title="inputs (top row) and each variant's reconstructions (one row each)")


def run(*, folder=os.path.join("runs", "generative", "overcomplete"), small=False, seed=0):
    folder = training.make_output_dir(folder)
    x, x_test, noise = digits_and_noise(seed)
    steps = 800 if small else 3000
    print(f"overcomplete autoencoders 64 -> {CODE_UNITS} -> 64 on {len(x)} scikit-learn digits (8x8), "
          f"{steps} Adam steps of batch 64 each")
    figures, models, encoders = {}, {}, {}
    for variant in VARIANTS:
        figures[variant], (models[variant], encoders[variant]) = measure(variant, x, x_test, noise, steps=steps,
                                                                         seed=seed)
    print_table(f"reconstruction error (FVU: 0 = perfect copy, 1 = the mean image) on {len(x_test)} test digits "
                f"and on {len(noise)} noise images; code sparsity on the test digits",
                ["variant", "added", "FVU digits", "FVU noise", "near-zero codes", f"active units (of {CODE_UNITS})",
                 "Hoyer sparsity"],
                [[v, ", ".join(f"{k} {o}" for k, o in VARIANTS[v].items()) or "nothing", f["fvu_digits"],
                  f["fvu_noise"], f["near_zero_codes"], f["active_units"], f["hoyer"]] for v, f in figures.items()])
    pngs = [filters_png(encoders, models, x_test, os.path.join(folder, "filters.png")),
            reconstructions_png(models, x_test, noise, os.path.join(folder, "reconstructions.png"))]
    for png in pngs:
        print(f"wrote {png}")
    return {"figures": figures, "steps": steps, "pngs": pngs}
