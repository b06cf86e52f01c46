"""Losses for generative models: VAE ELBO pieces, GAN objectives,
cycle consistency. GAN losses take discriminator *logits*."""

import math

import keras
import tensorflow as tf
from keras import ops

from losses._base import check_same_shape


def kl_standard_normal(mean, log_var):
    """Analytic KL(N(μ, σ²) || N(0, I)) per example (Kingma & Welling 2014,
    Appendix B): -½ Σ_j (1 + log σ_j² - μ_j² - σ_j²)."""
    check_same_shape("kl_standard_normal", mean, log_var)
    return -0.5 * ops.sum(1.0 + log_var - ops.square(mean) - ops.exp(log_var), axis=-1)


def kl_standard_normal_sampled(mean, log_var, num_samples=1, seed=None):
    """Monte-Carlo KL estimate E_q[log q(z) - log p(z)] with reparameterized
    samples, using tensorflow-probability distributions (the estimator the
    ELBO uses when no closed form exists). Per example; the TF backend
    only (tfp needs TF tensors)."""
    import tensorflow_probability as tfp

    check_same_shape("kl_standard_normal_sampled", mean, log_var)
    tfd = tfp.distributions
    q = tfd.Independent(tfd.Normal(mean, tf.exp(0.5 * log_var)), reinterpreted_batch_ndims=1)
    p = tfd.Independent(tfd.Normal(tf.zeros_like(mean), tf.ones_like(mean)), reinterpreted_batch_ndims=1)
    z = q.sample(num_samples, seed=seed)  # reparameterized: gradients reach μ and log σ²
    return tf.reduce_mean(q.log_prob(z) - p.log_prob(z), axis=0)


def gaussian_reconstruction_log_likelihood(x, x_mean, log_var=0.0):
    """log N(x | x̂, σ²) summed over the non-batch axes (the ELBO's first term)."""
    check_same_shape("gaussian_reconstruction_log_likelihood", x, x_mean)
    axes = tuple(range(1, len(x.shape)))
    log_var = ops.convert_to_tensor(log_var, x_mean.dtype)
    ll = -0.5 * (math.log(2.0 * math.pi) + log_var + ops.square(x - x_mean) / ops.exp(log_var))
    return ops.sum(ll + ops.zeros_like(x_mean), axis=axes)


def negative_elbo(x, x_mean, mean, log_var):
    """-ELBO = -E_q[log p(x|z)] + KL(q(z|x) || p(z)), per example."""
    return -gaussian_reconstruction_log_likelihood(x, x_mean) + kl_standard_normal(mean, log_var)


# GAN objectives (Goodfellow et al. 2014; Mao et al. 2017; Arjovsky et al. 2017; Gulrajani et al. 2017).
# log σ(l) = -softplus(-l), log(1 - σ(l)) = -softplus(l): stable forms of the paper's logs.

def discriminator_loss_minimax(real_logits, fake_logits):
    """-[log D(x) + log(1 - D(G(z)))] (Goodfellow et al. 2014, Eq. 1), batch mean."""
    return ops.mean(ops.softplus(-real_logits)) + ops.mean(ops.softplus(fake_logits))


def generator_loss_minimax(fake_logits):
    """log(1 - D(G(z))), the saturating generator objective of Eq. 1 (minimized)."""
    return -ops.mean(ops.softplus(fake_logits))


def generator_loss_non_saturating(fake_logits):
    """-log D(G(z)), the non-saturating heuristic (Goodfellow et al. 2014, Sec. 3)."""
    return ops.mean(ops.softplus(-fake_logits))


def discriminator_loss_least_squares(real_out, fake_out, a=0.0, b=1.0):
    """LSGAN (Mao et al. 2017, Eq. 2): ½ E[(D(x) - b)²] + ½ E[(D(G(z)) - a)²]."""
    return 0.5 * ops.mean(ops.square(real_out - b)) + 0.5 * ops.mean(ops.square(fake_out - a))


def generator_loss_least_squares(fake_out, c=1.0):
    """LSGAN generator: ½ E[(D(G(z)) - c)²]."""
    return 0.5 * ops.mean(ops.square(fake_out - c))


def critic_loss_wasserstein(real_scores, fake_scores):
    """WGAN critic (Arjovsky et al. 2017): E[f(G(z))] - E[f(x)] (minimized)."""
    return ops.mean(fake_scores) - ops.mean(real_scores)


def generator_loss_wasserstein(fake_scores):
    """WGAN generator: -E[f(G(z))]."""
    return -ops.mean(fake_scores)


def gradient_penalty(critic, real, fake, epsilon=None, seed=None):
    """WGAN-GP penalty (Gulrajani et al. 2017, Eq. 3):
    E[(||∇_x̂ f(x̂)||₂ - 1)²] at x̂ = ε x + (1-ε) x̃, ε ~ U[0, 1] per example.
    Needs the gradient of the critic with respect to its input, so it uses
    tf.GradientTape (keras.ops has no backend-neutral input gradient)."""
    real = tf.convert_to_tensor(real)
    fake = tf.cast(fake, real.dtype)
    check_same_shape("gradient_penalty", real, fake)
    if epsilon is None:
        shape = tf.concat([tf.shape(real)[:1], tf.ones([tf.rank(real) - 1], tf.int32)], 0)
        epsilon = tf.random.stateless_uniform(shape, seed=(0, 0) if seed is None else (seed, 0), dtype=real.dtype)
    x_hat = epsilon * real + (1.0 - epsilon) * fake
    with tf.GradientTape() as tape:
        tape.watch(x_hat)
        scores = critic(x_hat)
    grads = tape.gradient(scores, x_hat)
    norm = tf.sqrt(tf.reduce_sum(tf.reshape(grads, [tf.shape(grads)[0], -1]) ** 2, axis=1) + 1e-12)
    return tf.reduce_mean((norm - 1.0) ** 2)


def feature_matching_loss(real_features, fake_features):
    """Feature matching (Salimans et al. 2016, Sec. 3.1):
    || E_x f(x) - E_z f(G(z)) ||²₂ over an intermediate discriminator layer."""
    check_same_shape("feature_matching_loss", real_features, fake_features)
    return ops.sum(ops.square(ops.mean(real_features, axis=0) - ops.mean(fake_features, axis=0)))


def cycle_consistency_loss(real, reconstructed, weight=10.0):
    """CycleGAN (Zhu et al. 2017, Eq. 2): λ E[||F(G(x)) - x||₁], mean absolute error."""
    check_same_shape("cycle_consistency_loss", real, reconstructed)
    return weight * ops.mean(ops.abs(reconstructed - real))


@keras.saving.register_keras_serializable(package="suite")
class KLStandardNormal(keras.losses.Loss):
    """``kl_standard_normal`` as a Loss: y_pred = concat([μ, log σ²], -1), y_true ignored."""

    def __init__(self, name="kl_standard_normal", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        if y_pred.shape[-1] is not None and y_pred.shape[-1] % 2:
            raise ValueError(f"KLStandardNormal expects y_pred of shape (batch, 2*latent) = [mean, log_var], "
                             f"got shape {tuple(y_pred.shape)}")
        mean, log_var = ops.split(y_pred, 2, axis=-1)
        return kl_standard_normal(mean, log_var)


@keras.saving.register_keras_serializable(package="suite")
class CycleConsistencyLoss(keras.losses.Loss):
    """``cycle_consistency_loss`` as a Loss (y_true = x, y_pred = F(G(x)))."""

    def __init__(self, weight=10.0, name="cycle_consistency_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.weight = float(weight)

    def call(self, y_true, y_pred):
        check_same_shape("CycleConsistencyLoss", y_true, y_pred)
        axes = tuple(range(1, len(y_pred.shape)))
        return self.weight * ops.mean(ops.abs(y_pred - ops.cast(y_true, y_pred.dtype)), axis=axes)

    def get_config(self):
        config = super().get_config()
        config.update(weight=self.weight)
        return config
