"""Generative adversarial networks (Goodfellow et al. 2014) with a custom
`train_step`, so `fit` runs them under any `tf.distribute` strategy.

Generators map a latent vector z ~ N(0, I) (and a class label, when
conditional) through a tanh layer to [-1, 1], rescaled to the [0, 1] images
the rest of the app uses. Discriminators return [logits, features]: the
features (the last hidden layer) serve feature matching.

  gan      MLP generator and discriminator
  dcgan    DCGAN (Radford et al. 2016): strided convs with LeakyReLU in D,
           transposed convs with batch norm in G, tanh output
  cgan     class-conditional DCGAN (Mirza & Osindero 2014): the one-hot label
           joins z in G and the features in D
  wgan_gp  DCGAN critic without batch norm, Wasserstein loss + gradient penalty
           (Gulrajani et al. 2017), 5 critic steps per generator step

Losses come from `losses/`: minimax, non-saturating, least squares,
Wasserstein (+ `gradient_penalty`), and `feature_matching_loss`.
"""

import os

import keras
import numpy as np
import tensorflow as tf
from keras import layers

import losses as L
from apps.generative.common import AdversarialModel, OneHot, label_input, with_label
from core import precision
from layers import MinibatchDiscrimination

GAN_LOSSES = {
    # name: (discriminator loss(real, fake), generator loss(fake))
    "minimax": (L.discriminator_loss_minimax, L.generator_loss_minimax),
    "non_saturating": (L.discriminator_loss_minimax, L.generator_loss_non_saturating),
    "least_squares": (L.discriminator_loss_least_squares, L.generator_loss_least_squares),
    "wasserstein": (L.critic_loss_wasserstein, L.generator_loss_wasserstein),
}


def _generator_inputs(latent_dim, num_classes):
    latent = keras.Input(shape=(latent_dim,), name="latent")
    if not num_classes:
        return latent, latent
    labels, x = with_label(latent, num_classes)
    return [latent, labels], x


def _to_unit(x):
    # tanh's [-1, 1] -> [0, 1]; float32 images under a mixed policy (core.precision.output_dtype)
    return layers.Rescaling(0.5, offset=0.5, name="images", dtype=precision.output_dtype())(x)


def mlp_generator(image_shape, latent_dim=64, num_classes=0, hidden=(256, 512)):
    inputs, x = _generator_inputs(latent_dim, num_classes)
    for i, units in enumerate(hidden):
        x = layers.Dense(units, name=f"g_dense{i + 1}")(x)
        x = layers.LeakyReLU(0.2)(x)
    x = layers.Dense(int(np.prod(image_shape)), activation="tanh", name="g_tanh")(x)
    return keras.Model(inputs, _to_unit(layers.Reshape(image_shape)(x)), name="generator")


def dcgan_generator(image_shape, latent_dim=64, num_classes=0, filters=(128, 64)):
    height, width, channels = image_shape
    if height % 4 or width % 4:
        raise ValueError(f"the DCGAN generator needs a height and width divisible by 4, got {image_shape}")
    inputs, x = _generator_inputs(latent_dim, num_classes)
    x = layers.Dense((height // 4) * (width // 4) * filters[0], use_bias=False, name="g_project")(x)
    x = layers.BatchNormalization(name="g_bn0")(x)
    x = layers.ReLU()(x)
    x = layers.Reshape((height // 4, width // 4, filters[0]))(x)
    x = layers.Conv2DTranspose(filters[1], 4, strides=2, padding="same", use_bias=False, name="g_deconv1")(x)
    x = layers.BatchNormalization(name="g_bn1")(x)
    x = layers.ReLU()(x)
    x = layers.Conv2DTranspose(channels, 4, strides=2, padding="same", activation="tanh", name="g_deconv2")(x)
    return keras.Model(inputs, _to_unit(x), name="generator")


def _discriminator_inputs(image_shape, num_classes):
    images = keras.Input(shape=image_shape, name="images")
    x = layers.Rescaling(2.0, offset=-1.0)(images)  # [0, 1] -> [-1, 1], the generator's tanh range
    if not num_classes:
        return images, x, None
    labels = label_input()
    return [images, labels], x, OneHot(num_classes)(labels)


def _head(inputs, features, one_hot, minibatch_discrimination):
    x = features
    if one_hot is not None:
        x = layers.Concatenate()([x, one_hot])
    if minibatch_discrimination:
        x = MinibatchDiscrimination(num_kernels=32, kernel_dim=8, name="minibatch_discrimination")(x)
    logits = layers.Dense(1, name="logits", dtype=precision.output_dtype())(x)
    return keras.Model(inputs, [logits, features], name="discriminator")


def mlp_discriminator(image_shape, num_classes=0, hidden=(512, 256), minibatch_discrimination=False):
    inputs, x, one_hot = _discriminator_inputs(image_shape, num_classes)
    x = layers.Flatten()(x)
    if one_hot is not None:
        x = layers.Concatenate()([x, one_hot])
    for i, units in enumerate(hidden):
        x = layers.Dense(units, name=f"d_dense{i + 1}")(x)
        x = layers.LeakyReLU(0.2, name=f"d_features{i + 1}")(x)
    return _head(inputs, x, one_hot, minibatch_discrimination)


def dcgan_discriminator(image_shape, num_classes=0, filters=(64, 128), batch_norm=True,
                        minibatch_discrimination=False):
    inputs, x, one_hot = _discriminator_inputs(image_shape, num_classes)
    for i, f in enumerate(filters):
        x = layers.Conv2D(f, 4, strides=2, padding="same", name=f"d_conv{i + 1}")(x)
        if batch_norm and i > 0:  # no BN on the first layer (Radford et al.)
            x = layers.BatchNormalization(name=f"d_bn{i + 1}")(x)
        x = layers.LeakyReLU(0.2)(x)
    return _head(inputs, layers.Flatten(name="d_features")(x), one_hot, minibatch_discrimination)


@keras.saving.register_keras_serializable(package="generative")
class GAN(AdversarialModel):
    """A generator and a discriminator trained against each other.

    Each `train_step` takes `critic_steps` discriminator steps on the real
    batch and fresh fakes, then one generator step; both use the losses named
    by `loss`. `gp_weight` adds the WGAN-GP gradient penalty to the
    discriminator loss; `feature_matching` trains the generator on
    ||E f(x) - E f(G(z))||² of the discriminator's features instead."""

    def __init__(self, generator, discriminator, loss="non_saturating", num_classes=0, gp_weight=0.0,
                 critic_steps=1, feature_matching=False, **kwargs):
        super().__init__(**kwargs)
        if loss not in GAN_LOSSES:
            raise ValueError(f"unknown GAN loss '{loss}'; choose one of {sorted(GAN_LOSSES)}")
        self.generator, self.discriminator = generator, discriminator
        self.loss_name, self.num_classes = loss, int(num_classes)
        self.gp_weight, self.critic_steps = float(gp_weight), int(critic_steps)
        self.feature_matching = bool(feature_matching)
        self.latent_dim = int(generator.inputs[0].shape[-1])
        # real_score, fake_score: the mean discriminator output on real and generated images
        names = ("d_loss", "g_loss", "gradient_penalty", "real_score", "fake_score")
        self.trackers = {n: keras.metrics.Mean(name=n) for n in names}
        self.built = True  # the generator and discriminator are built functional models


    def generator_variables(self):
        return self.generator.trainable_variables

    def discriminator_variables(self):
        return self.discriminator.trainable_variables

    def _with_labels(self, x, labels):
        x = tf.convert_to_tensor(x, tf.float32)
        return [x, tf.convert_to_tensor(labels, tf.int32)] if self.num_classes else x

    def generate(self, latent, labels=None, training=False):
        return self.generator(self._with_labels(latent, labels), training=training)

    def discriminate(self, images, labels=None, training=False):
        """[logits, features] of the discriminator."""
        return self.discriminator(self._with_labels(images, labels), training=training)

    def call(self, inputs, training=False):
        latent, labels = inputs if self.num_classes else (inputs, None)
        return self.generate(latent, labels, training)

    def discriminator_loss(self, images, labels, latent, training=True):
        """(loss, gradient penalty, real logits, fake logits) of one discriminator step."""
        d_loss_fn, _ = GAN_LOSSES[self.loss_name]
        fake = self.generate(latent, labels, training=training)
        real_logits, _ = self.discriminate(images, labels, training)
        fake_logits, _ = self.discriminate(fake, labels, training)
        loss = d_loss_fn(real_logits, fake_logits)
        penalty = tf.constant(0.0)
        if self.gp_weight:
            epsilon = tf.random.uniform(tf.concat([tf.shape(images)[:1], [1, 1, 1]], 0))
            critic = lambda x: self.discriminate(x, labels, training)[0]
            penalty = L.gradient_penalty(critic, images, fake, epsilon=epsilon)
            loss = loss + self.gp_weight * penalty
        return loss, penalty, real_logits, fake_logits

    def generator_loss(self, images, labels, latent, training=True):
        _, g_loss_fn = GAN_LOSSES[self.loss_name]
        fake = self.generate(latent, labels, training=training)
        fake_logits, fake_features = self.discriminate(fake, labels, training)
        if self.feature_matching:
            _, real_features = self.discriminate(images, labels, training)
            return L.feature_matching_loss(tf.stop_gradient(real_features), fake_features)
        return g_loss_fn(fake_logits)

    def _latent(self, images):
        return tf.random.normal([tf.shape(images)[0], self.latent_dim])

    def train_step(self, data):
        images, labels = data[0], data[1]  # train_on_batch(x, y) adds a sample weight
        replicas = tf.distribute.get_strategy().num_replicas_in_sync  # the strategy sums replica gradients
        d_vars, g_vars = self.discriminator.trainable_variables, self.generator.trainable_variables
        for _ in range(self.critic_steps):
            with tf.GradientTape() as tape:
                d_loss, penalty, real_logits, fake_logits = self.discriminator_loss(images, labels,
                                                                                    self._latent(images))
                scaled = d_loss / replicas
            self.d_optimizer.apply_gradients(zip(tape.gradient(scaled, d_vars), d_vars))
        with tf.GradientTape() as tape:
            g_loss = self.generator_loss(images, labels, self._latent(images))
            scaled = g_loss / replicas
        self.g_optimizer.apply_gradients(zip(tape.gradient(scaled, g_vars), g_vars))
        self.trackers["d_loss"].update_state(d_loss)
        self.trackers["g_loss"].update_state(g_loss)
        self.trackers["gradient_penalty"].update_state(penalty)
        self.trackers["real_score"].update_state(tf.reduce_mean(real_logits))
        self.trackers["fake_score"].update_state(tf.reduce_mean(fake_logits))
        return {m.name: m.result() for m in self.metrics}

    # What app.py asks of every model family (see figures.py).

    def compile_for_run(self, learning_rate):
        # Radford et al.'s β₁ = 0.5; Gulrajani et al. use β = (0, 0.9) for WGAN-GP.
        beta_1, beta_2 = (0.0, 0.9) if self.gp_weight > 0 else (0.5, 0.999)
        self.compile(d_optimizer=keras.optimizers.Adam(learning_rate, beta_1=beta_1, beta_2=beta_2),
                     g_optimizer=keras.optimizers.Adam(learning_rate, beta_1=beta_1, beta_2=beta_2))

    def fit_data(self, images, config, global_batch):
        """Whole batches only (minibatch discrimination and batch norm see full batches), and no validation:
        no validation loss tells a better generator, so the run keeps its last (finite) epoch."""
        from apps.generative.common import to_unit
        from core import data

        train = data.batched(images.train.map(to_unit), global_batch, shuffle=True, seed=config.seed,
                             drop_remainder=True)
        return train, None, {"monitor": None}

    def epoch_figures(self, folder, images, config):
        from apps.generative import figures

        return figures.EpochSamples(folder, config.latent_dim, self.num_classes, images.class_names, config.seed)

    def sampler(self):
        return self.generator, bool(self.num_classes)

    def serving_model(self, config, test_images):
        from apps.generative import figures

        return figures.latent_serving(self, config)

    def judge_scores(self, config, scorer, x_test, y_test, num_samples):
        from apps.generative import figures

        return figures.judge_samples(self, config, scorer, x_test, num_samples)

    def evaluation_figures(self, config, images, x_test, y_test, out):
        """Samples, interpolations between random latents and latent arithmetic as PNGs (no test metric)."""
        from apps.generative import figures
        from core import plots

        def generate(latent):
            return np.asarray(self.generate(latent, np.zeros(len(latent), np.int32) if self.num_classes else None))

        pngs = [figures.sample_grid(self, config, 64, os.path.join(out, "samples.png"), f"{config['model']} samples")]
        rng = np.random.default_rng(2)
        rows = []
        for _ in range(4):
            path = np.linspace(0, 1, 10)[:, None] * rng.standard_normal(config["latent_dim"])[None]
            start = rng.standard_normal(config["latent_dim"])
            rows.append(generate((path + (1 - np.linspace(0, 1, 10)[:, None]) * start[None]).astype(np.float32)))
        pngs.append(plots.image_grid(np.concatenate(rows), [""] * 40, os.path.join(out, "interpolations.png"),
                                     columns=10, title="linear interpolation between random latents"))
        a, b, c = rng.standard_normal((3, config["latent_dim"])).astype(np.float32)
        pngs.append(plots.image_grid(latent_arithmetic(generate, a, b, c), ["G(a)", "G(b)", "G(c)", "G(a - b + c)"],
                                     os.path.join(out, "latent_arithmetic.png"), columns=4, title="latent arithmetic"))
        figures.say(*pngs)
        return {}

    def get_config(self):
        return {**super().get_config(),
                "generator": keras.saving.serialize_keras_object(self.generator),
                "discriminator": keras.saving.serialize_keras_object(self.discriminator),
                "loss": self.loss_name, "num_classes": self.num_classes, "gp_weight": self.gp_weight,
                "critic_steps": self.critic_steps, "feature_matching": self.feature_matching}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["generator"] = keras.saving.deserialize_keras_object(config["generator"])
        config["discriminator"] = keras.saving.deserialize_keras_object(config["discriminator"])
        return cls(**config)


def build_gan(kind, image_shape, latent_dim=64, num_classes=0, loss=None, feature_matching=False,
              minibatch_discrimination=False, critic_steps=None):
    """kind: gan (MLP), dcgan, cgan (conditional DCGAN) or wgan_gp."""
    conditional = num_classes if kind == "cgan" else 0
    if kind == "gan":
        generator = mlp_generator(image_shape, latent_dim, conditional)
        discriminator = mlp_discriminator(image_shape, conditional, minibatch_discrimination=minibatch_discrimination)
    elif kind in ("dcgan", "cgan", "wgan_gp"):
        generator = dcgan_generator(image_shape, latent_dim, conditional)
        discriminator = dcgan_discriminator(image_shape, conditional, batch_norm=kind != "wgan_gp",
                                            minibatch_discrimination=minibatch_discrimination)
    else:
        raise ValueError(f"unknown GAN '{kind}'")
    wgan = kind == "wgan_gp"
    loss = loss or ("wasserstein" if wgan else "non_saturating")
    return GAN(generator, discriminator, loss=loss, num_classes=conditional,
               gp_weight=10.0 if wgan else 0.0, critic_steps=critic_steps or (5 if wgan else 1),
               feature_matching=feature_matching, name=kind)


def latent_arithmetic(generator_fn, latent_a, latent_b, latent_c):
    """z_a - z_b + z_c (Radford et al. 2016, Sec. 6.3), generated with the rest."""
    latents = np.stack([latent_a, latent_b, latent_c, latent_a - latent_b + latent_c]).astype(np.float32)
    return generator_fn(latents)
