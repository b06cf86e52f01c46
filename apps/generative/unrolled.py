"""Experiment: unrolled GAN (Metz, Poole, Pfau & Sohl-Dickstein, "Unrolled Generative Adversarial
Networks", ICLR 2017) against the plain GAN on the ring of eight Gaussians.

A plain GAN's generator step follows ∂f(θ_G, θ_D)/∂θ_G with the discriminator frozen: the generator moves
its samples to wherever the *current* discriminator likes them most, the discriminator then turns
against that spot, and the generator hops to another one. On a mixture of eight Gaussians on a circle
the generator chases the modes one or a few at a time instead of covering them all (mode dropping).

The unrolled generator looks ahead: it is trained against θ_D^K, the discriminator after K of its own
gradient steps on the current batch,

    θ_D^0 = θ_D,   θ_D^{k+1} = θ_D^k - η ∂L_D(θ_G, θ_D^k)/∂θ_D^k,   generator loss f(θ_G, θ_D^K),

with the gradient taken *through* the unrolling: dθ_D^K/dθ_G carries how the discriminator would react
to the generator's move (second derivatives, Hessian-vector products of L_D), so collapsing onto one
mode, which the discriminator would punish within K steps, stops paying. With K = 0 this is the plain
GAN. The discriminator itself still takes one ordinary Adam step per batch; the lookahead is only in the
generator's loss. (The paper unrolls Adam with its moment estimates; here the unrolled steps are plain
gradient descent with a step η of their own, which keeps the lookahead a few lines of tensor algebra.)

`second_order=False` gives the cheaper surrogate that stops the gradient at θ_D^K (the generator
trains against the unrolled discriminator as if it were fixed): the test shows its gradient differs, and
that the full one matches finite differences.

The ring: eight Gaussians of standard deviation σ = 0.05 on a circle of radius 2 (Metz et al. use
σ = 0.02; wider modes let the few thousand steps a CPU affords reach them).
Scores (Srivastava et al. 2017, VEEGAN): a sample is of high quality when it lies within 3σ of a mode's
centre; a mode is covered when at least MODE_SHARE of the samples are high-quality samples of that mode.
"""

import os

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from apps.basics.common import print_table
from apps.generative.gan import GAN, GAN_LOSSES
from core import plots, training

MODES, RADIUS, STD = 8, 2.0, 0.05
MODE_SHARE = 0.02  # a mode counts as covered with ≥ 2% of the samples (a sixth of its fair 12.5%)
SNAPSHOTS = 5  # samples are drawn and scored this many times during training


# --------------------------------------------------------------------------
# The data: a ring of Gaussians.


def ring_centres(modes=MODES, radius=RADIUS):
    angles = 2 * np.pi * np.arange(modes) / modes
    return (radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)).astype(np.float32)


def ring_samples(n, std=STD, seed=0, modes=MODES, radius=RADIUS):
    rng = np.random.default_rng(seed)
    centres = ring_centres(modes, radius)
    return (centres[rng.integers(modes, size=n)] + std * rng.standard_normal((n, 2))).astype(np.float32)


def mode_scores(samples, std=STD, modes=MODES, radius=RADIUS, share=MODE_SHARE):
    """(modes covered, share of high-quality samples, per-mode shares of the samples)."""
    centres = ring_centres(modes, radius)
    distances = np.linalg.norm(samples[:, None, :] - centres[None], axis=2)
    nearest, good = distances.argmin(axis=1), distances.min(axis=1) <= 3 * std
    per_mode = np.bincount(nearest[good], minlength=modes) / len(samples)
    return int((per_mode >= share).sum()), float(good.mean()), per_mode


# --------------------------------------------------------------------------
# The networks (Metz et al.'s ring experiment, smaller: two ReLU layers of 64 units each, latent 16).


def point_generator(latent_dim=16, hidden=(64, 64)):
    latent = keras.Input(shape=(latent_dim,), name="latent")
    x = latent
    for i, units in enumerate(hidden):
        x = layers.Dense(units, activation="relu", name=f"g_dense{i + 1}")(x)
    return keras.Model(latent, layers.Dense(2, name="points")(x), name="generator")


def point_discriminator(hidden=(64, 64)):
    """Point -> [logit, features]: the two outputs `gan.GAN` expects of a discriminator."""
    points = keras.Input(shape=(2,), name="points")
    x = points
    for i, units in enumerate(hidden):
        x = layers.Dense(units, activation="relu", name=f"d_dense{i + 1}")(x)
    return keras.Model(points, [layers.Dense(1, name="logits")(x), x], name="discriminator")


# --------------------------------------------------------------------------
# The model.


@keras.saving.register_keras_serializable(package="generative")
class UnrolledGAN(GAN):
    """`gan.GAN` whose generator loss is taken against the discriminator unrolled `unroll_steps` steps of
    gradient descent (step `unroll_learning_rate`) ahead; `second_order=False` stops the gradient at
    the unrolled weights. Unconditional; the non-saturating loss by default."""

    def __init__(self, generator, discriminator, unroll_steps=5, unroll_learning_rate=0.03, second_order=True,
                 **kwargs):
        super().__init__(generator, discriminator, **kwargs)
        if unroll_steps < 0:
            raise ValueError(f"unroll_steps must be ≥ 0, got {unroll_steps}")
        self.unroll_steps, self.unroll_learning_rate = int(unroll_steps), float(unroll_learning_rate)
        self.second_order = bool(second_order)

    def logits_with(self, weights, points):
        """The discriminator's logits with `weights` in place of its own (no side effects)."""
        (logits, _), _ = self.discriminator.stateless_call(weights, self.discriminator.non_trainable_variables,
                                                           points, training=True)
        return logits

    def unrolled_weights(self, real, fake):
        """θ_D^K: K gradient-descent steps of the discriminator loss on (real, fake), from θ_D.
        Differentiable: every step is ordinary ops on tensors, so a tape outside sees through them."""
        d_loss_fn, _ = GAN_LOSSES[self.loss_name]
        weights = [tf.convert_to_tensor(v) for v in self.discriminator.trainable_variables]
        for _ in range(self.unroll_steps):
            with tf.GradientTape() as tape:
                tape.watch(weights)
                loss = d_loss_fn(self.logits_with(weights, real), self.logits_with(weights, fake))
            gradients = tape.gradient(loss, weights)
            weights = [w - self.unroll_learning_rate * g for w, g in zip(weights, gradients)]
        return weights

    def generator_loss(self, images, labels, latent, training=True):
        """f(θ_G, θ_D^K); with K = 0 exactly `GAN.generator_loss` (the plain generator loss)."""
        _, g_loss_fn = GAN_LOSSES[self.loss_name]
        fake = self.generate(latent, labels, training=training)
        # The unrolled discriminator sees the generator's samples: through them θ_D^K depends on θ_G.
        weights = self.unrolled_weights(images, fake if self.second_order else tf.stop_gradient(fake))
        return g_loss_fn(self.logits_with(weights, fake))

    def train_step(self, data):
        points = data[0] if isinstance(data, tuple) else data
        replicas = tf.distribute.get_strategy().num_replicas_in_sync  # the strategy sums replica gradients
        d_vars, g_vars = self.discriminator.trainable_variables, self.generator.trainable_variables
        # 1. The discriminator's own step, as in the plain GAN.
        with tf.GradientTape() as tape:
            d_loss, _, real_logits, fake_logits = self.discriminator_loss(points, None, self._latent(points))
            scaled = d_loss / replicas
        self.d_optimizer.apply_gradients(zip(tape.gradient(scaled, d_vars), d_vars))
        # 2. The generator's step against the discriminator K steps ahead (the tape sees the unrolling).
        with tf.GradientTape() as tape:
            g_loss = self.generator_loss(points, None, self._latent(points))
            scaled = g_loss / replicas
        self.g_optimizer.apply_gradients(zip(tape.gradient(scaled, g_vars), g_vars))
        self.trackers["d_loss"].update_state(d_loss)
        self.trackers["g_loss"].update_state(g_loss)
        self.trackers["real_score"].update_state(tf.reduce_mean(real_logits))
        self.trackers["fake_score"].update_state(tf.reduce_mean(fake_logits))
        return {m.name: m.result() for m in self.metrics}

    def get_config(self):
        return {**super().get_config(), "unroll_steps": self.unroll_steps,
                "unroll_learning_rate": self.unroll_learning_rate, "second_order": self.second_order}


def build(unroll_steps, *, latent_dim=16, hidden=(64, 64), unroll_learning_rate=0.03, second_order=True, seed=0):
    """An `UnrolledGAN` on 2-D points (unroll_steps=0: the plain GAN), uncompiled."""
    keras.utils.set_random_seed(seed)
    return UnrolledGAN(point_generator(latent_dim, hidden), point_discriminator(hidden), unroll_steps=unroll_steps,
                       unroll_learning_rate=unroll_learning_rate, second_order=second_order,
                       name=f"unrolled_{unroll_steps}" if unroll_steps else "plain_gan")


def compile_for_ring(net, d_learning_rate=5e-4, g_learning_rate=5e-3):
    """Adam for both (β₁ = 0.5, Radford et al.), the generator's steps ten times the discriminator's, as in
    Metz et al.'s ring experiment (they use 1e-4 and 1e-3; both larger here, for a CPU budget). With these
    steps the unrolled GAN stays on all eight modes for thousands of steps; with 1.6 times larger ones (and
    an unroll step of 0.05) it gets there in half the steps but drifts off again after ~1,200."""
    net.compile(d_optimizer=keras.optimizers.Adam(d_learning_rate, beta_1=0.5),
                g_optimizer=keras.optimizers.Adam(g_learning_rate, beta_1=0.5))
    return net


class Snapshots(keras.callbacks.Callback):
    """At the end of every epoch: samples from fixed latents and their scores."""

    def __init__(self, num=1000, seed=0):
        super().__init__()
        self.num, self.seed, self.samples, self.scores = num, seed, [], []

    def on_epoch_end(self, epoch, logs=None):
        latent = np.random.default_rng(self.seed + 1).standard_normal((self.num, self.model.latent_dim))
        samples = np.asarray(self.model.generator(latent.astype(np.float32), training=False))
        self.samples.append(samples)
        self.scores.append(mode_scores(samples))


def train_on_ring(net, *, steps, batch_size=256, snapshots=SNAPSHOTS, seed=0):
    """`fit` on a stream of ring samples; returns the `Snapshots` taken every steps/snapshots steps."""
    points = tf.data.Dataset.from_tensor_slices(ring_samples(200_000, seed=seed)).repeat()
    record = Snapshots(seed=seed)
    net.fit(points.batch(batch_size, drop_remainder=True), epochs=snapshots, steps_per_epoch=steps // snapshots,
            callbacks=[record], shuffle=False, verbose=0)
    return record


def samples_png(records, steps, path):
    """One row per model, one panel per snapshot: generated points over the ring's centres."""
    import matplotlib.pyplot as plt

    columns = len(next(iter(records.values())).samples)
    fig, axes = plt.subplots(len(records), columns, figsize=(2.3 * columns, 2.5 * len(records)), squeeze=False)
    centres = ring_centres()
    for row, (name, record) in zip(axes, records.items()):
        for i, (ax, samples, (covered, quality, _)) in enumerate(zip(row, record.samples, record.scores)):
            ax.scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.4)
            ax.scatter(centres[:, 0], centres[:, 1], s=25, marker="x", color="red")
            ax.set_xlim(-3, 3)
            ax.set_ylim(-3, 3)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{name}, step {(i + 1) * steps // columns}\n{covered}/8 modes, {100 * quality:.0f}% good",
                         fontsize=8)
    return plots.save_figure(fig, path)


def run(*, folder=os.path.join("runs", "generative", "unrolled"), small=False, seed=0, unroll_steps=5,
        steps=None):
    folder = training.make_output_dir(folder)
    steps = steps or (750 if small else 2000)
    steps -= steps % SNAPSHOTS  # whole epochs of steps / SNAPSHOTS
    seeds = [seed] if small else [seed, seed + 1, seed + 2]
    print(f"plain GAN vs {unroll_steps}-step unrolled GAN on a ring of {MODES} Gaussians (radius {RADIUS}, "
          f"std {STD}): {steps} steps of batch 256, seeds {seeds}")
    rows, records = [], {}
    for s in seeds:
        for k in (0, unroll_steps):
            net = compile_for_ring(build(k, seed=s))
            record = train_on_ring(net, steps=steps, seed=s)
            covered, quality, _ = record.scores[-1]
            name = "plain GAN" if k == 0 else f"unrolled K={k}"
            rows.append([name, s, covered, quality, max(c for c, _, _ in record.scores)])
            print(f"  seed {s}, {name}: {covered}/{MODES} modes, {100 * quality:.0f}% high-quality samples")
            if s == seed:
                records[name] = record
    print_table(f"after {steps} steps, 1,000 samples: modes covered (≥ {100 * MODE_SHARE:g}% of the samples within "
                f"3σ of a mode) and the share of samples within 3σ of some mode",
                ["model", "seed", "modes covered (of 8)", "high-quality share", "most modes at a snapshot"], rows)
    png = samples_png(records, steps, os.path.join(folder, "samples.png"))
    print(f"wrote {png}")
    return {"rows": rows, "steps": steps, "pngs": [png]}
