"""Variational autoencoder (Kingma & Welling, "Auto-Encoding Variational
Bayes", 2014), optionally conditioned on the class (Sohn et al. 2015).

The encoder outputs μ and log σ² of q(z|x) = N(μ, diag σ²); the
`layers.Reparameterization` layer draws z = μ + σ ε; the decoder outputs
logits ℓ of p(x|z):
  bernoulli  log p(x|z) = Σ x log σ(ℓ) + (1-x) log(1-σ(ℓ))   (grey x: the cross-entropy form)
  gaussian   log p(x|z) = log N(x | σ(ℓ), s²), s fixed     (`losses.gaussian_reconstruction_log_likelihood`)
The loss is the negative ELBO, -E_q[log p(x|z)] + KL(q(z|x) || N(0, I)), the KL
from tensorflow-probability distributions: analytic (`tfd.kl_divergence`,
checked against `losses.kl_standard_normal`) or sampled
(`losses.kl_standard_normal_sampled`). Images are in [0, 1].
"""

import math
import os

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from keras import layers, ops

from apps.generative.common import label_input, to_unit, with_label
from core import precision
from layers import Reparameterization
from losses import gaussian_reconstruction_log_likelihood, kl_standard_normal_sampled

tfd = tfp.distributions
LIKELIHOODS = ("bernoulli", "gaussian")
KL_ESTIMATORS = ("analytic", "sampled")


def posterior(mean, log_var):
    """q(z|x) as a tfp distribution over the latent vector."""
    return tfd.Independent(tfd.Normal(mean, tf.exp(0.5 * log_var)), reinterpreted_batch_ndims=1)


def prior_like(mean):
    return tfd.Independent(tfd.Normal(tf.zeros_like(mean), tf.ones_like(mean)), reinterpreted_batch_ndims=1)


def kl_divergence(mean, log_var, estimator="analytic", seed=None):
    """KL(q(z|x) || N(0, I)) per example, with tfp distributions."""
    if estimator == "analytic":
        return tfd.kl_divergence(posterior(mean, log_var), prior_like(mean))
    return kl_standard_normal_sampled(mean, log_var, seed=seed)


def log_likelihood(x, logits, likelihood="bernoulli", gaussian_std=0.1):
    """log p(x|z) per example, summed over the pixels."""
    if likelihood == "bernoulli":  # x may be grey: the cross-entropy form, Σ x log σ(ℓ) + (1-x) log(1-σ(ℓ))
        axes = list(range(1, len(x.shape)))
        return -tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.cast(x, logits.dtype), logits=logits),
                              axis=axes)
    return gaussian_reconstruction_log_likelihood(x, tf.sigmoid(logits), 2.0 * math.log(gaussian_std))


def build_encoder(image_shape, latent_dim, num_classes=0, hidden=(512, 256)):
    """Dense encoder x (and label) -> [μ, log σ²]."""
    images = keras.Input(shape=image_shape, name="images")
    inputs, x = [images], layers.Flatten()(images)
    if num_classes:
        labels, x = with_label(x, num_classes)
        inputs.append(labels)
    for i, units in enumerate(hidden):
        x = layers.Dense(units, activation="relu", name=f"enc_dense{i + 1}")(x)
    # the posterior's parameters and the pixel logits in float32 under a mixed policy (core.precision.output_dtype)
    mean = layers.Dense(latent_dim, name="mean", dtype=precision.output_dtype())(x)
    log_var = layers.Dense(latent_dim, name="log_var", dtype=precision.output_dtype())(x)
    return keras.Model(inputs if num_classes else images, [mean, log_var], name="encoder")


def build_decoder(image_shape, latent_dim, num_classes=0, hidden=(256, 512)):
    """Dense decoder z (and label) -> pixel logits."""
    latent = keras.Input(shape=(latent_dim,), name="latent")
    inputs, x = [latent], latent
    if num_classes:
        labels, x = with_label(x, num_classes)
        inputs.append(labels)
    for i, units in enumerate(hidden):
        x = layers.Dense(units, activation="relu", name=f"dec_dense{i + 1}")(x)
    logits = layers.Dense(int(np.prod(image_shape)), name="logits")(x)
    return keras.Model(inputs if num_classes else latent, layers.Reshape(image_shape,
                                                                         dtype=precision.output_dtype())(logits),
                       name="decoder")


@keras.saving.register_keras_serializable(package="generative")
class VAE(keras.Model):
    """Encoder + reparameterization + decoder, trained on the negative ELBO by a custom `train_step`."""

    def __init__(self, encoder, decoder, likelihood="bernoulli", kl="analytic", num_classes=0,
                 gaussian_std=0.1, seed=None, **kwargs):
        super().__init__(**kwargs)
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood '{likelihood}'; choose one of {LIKELIHOODS}")
        if kl not in KL_ESTIMATORS:
            raise ValueError(f"unknown KL estimator '{kl}'; choose one of {KL_ESTIMATORS}")
        self.encoder, self.decoder = encoder, decoder
        self.likelihood, self.kl, self.num_classes = likelihood, kl, int(num_classes)
        self.gaussian_std, self.seed = float(gaussian_std), seed
        self.reparameterize = Reparameterization(seed=seed, name="reparameterize")
        self.latent_dim = int(decoder.inputs[0].shape[-1])
        self.loss_tracker = keras.metrics.Mean(name="loss")  # -ELBO, nats per image
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction")  # -E_q log p(x|z)
        self.kl_tracker = keras.metrics.Mean(name="kl")

    @property
    def metrics(self):
        return [self.loss_tracker, self.reconstruction_tracker, self.kl_tracker]

    def _condition(self, inputs, labels):
        inputs = ops.convert_to_tensor(inputs, "float32")
        return [inputs, ops.convert_to_tensor(labels, "int32")] if self.num_classes else inputs

    def encode(self, images, labels=None, training=False):
        return self.encoder(self._condition(images, labels), training=training)

    def decode(self, latent, labels=None, training=False):
        """Mean image E[x|z] in [0, 1]."""
        return ops.sigmoid(self.decoder(self._condition(latent, labels), training=training))

    generate = decode  # the name the GANs use: latent (and labels) -> image

    def call(self, inputs, training=False):
        images, labels = (inputs if self.num_classes else (inputs, None))
        mean, log_var = self.encode(images, labels, training)
        return self.decode(self.reparameterize([mean, log_var]), labels, training)

    def terms(self, images, labels=None, training=False):
        """Per-example (-E_q log p(x|z) with one sample, KL(q || p)) and the posterior parameters."""
        mean, log_var = self.encode(images, labels, training)
        # ε from a stateless-per-call op rather than the layer's SeedGenerator: the generator's state
        # variable is not safe to update inside a MirroredStrategy replica context.
        z = self.reparameterize([mean, log_var], epsilon=tf.random.normal(tf.shape(mean)))
        logits = self.decoder(self._condition(z, labels), training=training)
        reconstruction = -log_likelihood(images, logits, self.likelihood, self.gaussian_std)
        kl = kl_divergence(mean, log_var, self.kl)
        return reconstruction, kl, mean, log_var

    def _update(self, reconstruction, kl):
        loss = reconstruction + kl
        self.loss_tracker.update_state(loss)
        self.reconstruction_tracker.update_state(reconstruction)
        self.kl_tracker.update_state(kl)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        images, labels = data[0], data[1]
        with tf.GradientTape() as tape:
            reconstruction, kl, _, _ = self.terms(images, labels, training=True)
            loss = tf.reduce_mean(reconstruction + kl)
            # Each replica averages its own share of the global batch; the
            # strategy sums the replicas' gradients, so divide by their number.
            scaled = loss / tf.distribute.get_strategy().num_replicas_in_sync
        gradients = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        return self._update(reconstruction, kl)

    def test_step(self, data):
        images, labels = data[0], data[1]
        reconstruction, kl, _, _ = self.terms(images, labels, training=False)
        return self._update(reconstruction, kl)

    def importance_sampled_nll(self, images, labels=None, num_samples=50):
        """-log p(x) ≈ -log (1/K) Σ_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q (Burda et al. 2016), per example."""
        mean, log_var = self.encode(images, labels)
        q = posterior(mean, log_var)
        p = prior_like(mean)
        log_weights = []
        for _ in range(num_samples):
            z = q.sample()
            logits = self.decoder(self._condition(z, labels))
            log_weights.append(log_likelihood(images, logits, self.likelihood, self.gaussian_std)
                               + p.log_prob(z) - q.log_prob(z))
        log_weights = tf.stack(log_weights)
        return -(tf.reduce_logsumexp(log_weights, axis=0) - math.log(num_samples))

    def generator(self):
        """The decoder as a model latent (and label) -> image in [0, 1], for sampling and export."""
        latent = keras.Input(shape=(self.latent_dim,), name="latent")
        inputs = [latent, label_input()] if self.num_classes else latent
        images = layers.Activation("sigmoid", name="images")(self.decoder(inputs))
        return keras.Model(inputs, images, name="vae_decoder")

    # What app.py asks of every model family (see figures.py).

    def compile_for_run(self, learning_rate):
        self.compile(optimizer=keras.optimizers.Adam(learning_rate))

    def fit_data(self, images, config, global_batch):
        """(training batches, validation batches, fit options): images in [0, 1] with their labels."""
        from core import data

        train = data.batched(images.train.map(to_unit), global_batch, shuffle=True, seed=config.seed)
        return train, data.batched(images.val.map(to_unit), global_batch), {}

    def epoch_figures(self, folder, images, config):
        from apps.generative import figures

        return figures.EpochSamples(folder, config.latent_dim, self.num_classes, images.class_names, config.seed)

    def sampler(self):
        return self.generator(), bool(self.num_classes)

    def serving_model(self, config, test_images):
        from apps.generative import figures

        return figures.latent_serving(self, config)

    def judge_scores(self, config, scorer, x_test, y_test, num_samples):
        from apps.generative import figures

        return figures.judge_samples(self, config, scorer, x_test, num_samples)

    def evaluation_figures(self, config, images, x_test, y_test, out):
        """Test ELBO and its terms, the importance-sampled NLL; reconstructions, samples, the latent manifold and
        interpolations as PNGs. Returns the metrics."""
        from apps.generative import figures
        from core import plots

        labels = y_test if self.num_classes else None
        history = self.evaluate(x_test, y_test, batch_size=500, verbose=0, return_dict=True)
        n_nll = min(len(x_test), 1000)
        nll = float(np.mean(self.importance_sampled_nll(x_test[:n_nll], None if labels is None else labels[:n_nll],
                                                        num_samples=50)))
        metrics = {"test_negative_elbo": history["loss"], "test_reconstruction": history["reconstruction"],
                   "test_kl": history["kl"], "test_nll_importance_50": nll, "likelihood": config["likelihood"]}
        print(f"{config['model']} ({config['likelihood']} likelihood, latent {config['latent_dim']}) on "
              f"{images.name}: test ELBO {-history['loss']:.2f} nats/image (reconstruction "
              f"{history['reconstruction']:.2f}, KL {history['kl']:.2f}); NLL ≈ {nll:.2f} (importance sampling, "
              f"50 samples, {n_nll} images)")
        mean, _ = self.encode(x_test[:10], None if labels is None else labels[:10])
        recon = np.asarray(self.decode(mean, None if labels is None else labels[:10]))
        pngs = [figures.reconstruction_png(x_test[:10], recon, os.path.join(out, "reconstructions.png"),
                                           f"{config['model']}: test images and reconstructions from μ"),
                figures.sample_grid(self, config, 40, os.path.join(out, "samples.png"),
                                    f"{config['model']}: decoder means for z ~ N(0, I)")]
        n = 15
        grid = manifold_grid(n, config["latent_dim"])
        manifold = np.asarray(self.decode(grid, np.full(len(grid), 0, np.int32) if self.num_classes else None))
        height, width, channels = manifold.shape[1:]
        mosaic = manifold.reshape(n, n, height, width, channels).transpose(0, 2, 1, 3, 4).reshape(
            n * height, n * width, channels)  # one image: 225 matplotlib axes would be slow
        pngs.append(figures.save_mosaic(np.kron(mosaic, np.ones((2, 2, 1))), os.path.join(out, "manifold.png")))
        rows = []
        for i in range(4):
            path = interpolate(mean[2 * i], mean[2 * i + 1], 10)
            rows.append(np.asarray(self.decode(path, None if labels is None
                                               else np.full(10, labels[2 * i], np.int32))))
        pngs.append(plots.image_grid(np.concatenate(rows), [""] * 40, os.path.join(out, "interpolations.png"),
                                     columns=10, title="linear interpolation between two test images' μ"))
        figures.say(*pngs)
        return metrics

    def get_config(self):
        return {**super().get_config(),
                "encoder": keras.saving.serialize_keras_object(self.encoder),
                "decoder": keras.saving.serialize_keras_object(self.decoder),
                "likelihood": self.likelihood, "kl": self.kl, "num_classes": self.num_classes,
                "gaussian_std": self.gaussian_std, "seed": self.seed}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        config["decoder"] = keras.saving.deserialize_keras_object(config["decoder"])
        return cls(**config)


def build_vae(image_shape, latent_dim=2, num_classes=0, likelihood="bernoulli", kl="analytic", seed=None):
    vae = VAE(build_encoder(image_shape, latent_dim, num_classes), build_decoder(image_shape, latent_dim, num_classes),
              likelihood=likelihood, kl=kl, num_classes=num_classes, seed=seed, name="cvae" if num_classes else "vae")
    example = np.zeros((1, *image_shape), np.float32)
    vae([example, np.zeros((1,), np.int32)] if num_classes else example)  # build the variables now
    return vae


def manifold_grid(n=15, latent_dim=2, edge=0.05):
    """Latent points of the 2-D manifold figure (Kingma & Welling, Fig. 4): a
    uniform grid on the unit square mapped through the inverse Gaussian CDF,
    so equal areas hold equal prior mass; dimensions past the first two are 0."""
    from scipy.stats import norm

    values = norm.ppf(np.linspace(edge, 1.0 - edge, n))
    grid = np.zeros((n * n, latent_dim), np.float32)
    grid[:, 0] = np.tile(values, n)
    grid[:, 1] = np.repeat(values[::-1], n)
    return grid


def interpolate(a, b, steps=8):
    """Points on the straight line from latent a to latent b (inclusive)."""
    t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
    return (1.0 - t) * np.asarray(a, np.float32)[None] + t * np.asarray(b, np.float32)[None]
