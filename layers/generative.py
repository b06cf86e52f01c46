"""Layers for generative models: reparameterization, minibatch
discrimination, virtual batch normalization."""

import keras
from keras import layers, ops

from layers._checks import check_rank


@keras.saving.register_keras_serializable(package="suite")
class Reparameterization(layers.Layer):
    """Reparameterization trick (Kingma & Welling, "Auto-Encoding Variational
    Bayes", 2014, Eq. 10): inputs [μ, log σ²]; z = μ + σ ⊙ ε, ε ~ N(0, I),
    σ = exp(½ log σ²). Sampling happens in training *and* inference (a VAE
    samples by definition); ``sample=False`` returns μ instead (the posterior
    mean, deterministic, e.g. for export)."""

    def __init__(self, sample=True, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.sample = bool(sample)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        if not (isinstance(input_shape, (list, tuple)) and len(input_shape) == 2
                and isinstance(input_shape[0], (list, tuple))):
            raise ValueError(f"Reparameterization expects two inputs [mean, log_variance] of shape (batch, latent), "
                             f"got {input_shape}")
        if tuple(input_shape[0][1:]) != tuple(input_shape[1][1:]):
            raise ValueError(f"Reparameterization expects mean and log_variance of the same shape, "
                             f"got {tuple(input_shape[0])} and {tuple(input_shape[1])}")
        super().build(input_shape)

    def call(self, inputs, epsilon=None):
        mean, log_var = inputs
        if not self.sample and epsilon is None:
            return mean
        if epsilon is None:
            epsilon = keras.random.normal(ops.shape(mean), seed=self.seed_generator, dtype=mean.dtype)
        return mean + ops.exp(0.5 * log_var) * epsilon

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        config = super().get_config()
        config.update(sample=self.sample, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="suite")
class MinibatchDiscrimination(layers.Layer):
    """Minibatch discrimination (Salimans et al., "Improved Techniques for
    Training GANs", 2016, Sec. 3.2): M_i = f(x_i) T ∈ R^{B×C};
    c_b(x_i, x_j) = exp(-||M_{i,b} - M_{j,b}||_1); o(x_i)_b = Σ_j c_b(x_i, x_j)
    (j ≠ i, i.e. the sum minus the self term exp(0) = 1);
    output [x_i, o(x_i)] of shape (batch, features + num_kernels)."""

    def __init__(self, num_kernels, kernel_dim, **kwargs):
        super().__init__(**kwargs)
        self.num_kernels = int(num_kernels)
        self.kernel_dim = int(kernel_dim)

    def build(self, input_shape):
        check_rank(self, input_shape, 2, "(batch, features)")
        self.T = self.add_weight(shape=(input_shape[-1], self.num_kernels, self.kernel_dim), name="T")
        super().build(input_shape)

    def call(self, inputs):
        m = ops.einsum("nf,fbc->nbc", inputs, self.T)
        l1 = ops.sum(ops.abs(m[:, None] - m[None, :]), axis=-1)   # (N, N, B)
        o = ops.sum(ops.exp(-l1), axis=1) - 1.0
        return ops.concatenate([inputs, o], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1] + self.num_kernels)

    def get_config(self):
        config = super().get_config()
        config.update(num_kernels=self.num_kernels, kernel_dim=self.kernel_dim)
        return config


@keras.saving.register_keras_serializable(package="suite")
class VirtualBatchNormalization(layers.Layer):
    """Virtual batch normalization (Salimans et al. 2016, Sec. 3.4): each
    example x is normalized with statistics of a fixed reference batch R
    plus itself: μ = (|R| μ_R + x)/(|R|+1) (same for E[x²]), then
    y = γ (x - μ)/sqrt(σ² + ε) + β, per feature (last axis).

    The reference batch statistics are non-trainable weights set once by
    ``set_reference(batch)``; each example's statistics are combined with
    them, so outputs never depend on the rest of the current batch."""

    def __init__(self, reference_size=None, epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.reference_size = reference_size
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        if len(input_shape) < 2 or input_shape[-1] is None:
            raise ValueError(f"VirtualBatchNormalization expects an input of shape (batch, ..., features) with "
                             f"known features, got shape {tuple(input_shape)}")
        self.reduce_axes = tuple(range(1, len(input_shape) - 1))
        c = input_shape[-1]
        self.gamma = self.add_weight(shape=(c,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(c,), initializer="zeros", name="beta")
        self.ref_mean = self.add_weight(shape=(c,), initializer="zeros", trainable=False, name="ref_mean")
        self.ref_mean_sq = self.add_weight(shape=(c,), initializer="ones", trainable=False, name="ref_mean_sq")
        self.ref_count = self.add_weight(shape=(), initializer="ones", trainable=False, name="ref_count")
        super().build(input_shape)

    def set_reference(self, batch):
        """Fix the reference batch (Salimans et al. choose it once, at the start)."""
        batch = ops.convert_to_tensor(batch, self.compute_dtype)
        if not self.built:
            self.build(batch.shape)
        axes = (0,) + self.reduce_axes
        self.ref_mean.assign(ops.mean(batch, axis=axes))
        self.ref_mean_sq.assign(ops.mean(batch * batch, axis=axes))
        self.ref_count.assign(float(batch.shape[0]))

    def call(self, inputs):
        # Built by set_reference before any call, so the rank is checked here too.
        if len(inputs.shape) != len(self.reduce_axes) + 2:
            raise ValueError(f"VirtualBatchNormalization expects an input of shape (batch, ..., features) of rank "
                             f"{len(self.reduce_axes) + 2} like its reference batch, got shape {tuple(inputs.shape)}")
        n = self.ref_count
        x_mean = ops.mean(inputs, axis=self.reduce_axes, keepdims=True) if self.reduce_axes else inputs
        x_sq = ops.mean(inputs * inputs, axis=self.reduce_axes, keepdims=True) if self.reduce_axes else inputs * inputs
        mean = (n * self.ref_mean + x_mean) / (n + 1.0)
        mean_sq = (n * self.ref_mean_sq + x_sq) / (n + 1.0)
        var = mean_sq - mean * mean
        return self.gamma * (inputs - mean) / ops.sqrt(var + self.epsilon) + self.beta

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(reference_size=self.reference_size, epsilon=self.epsilon)
        return config
