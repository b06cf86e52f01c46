"""Regularization layers: DropConnect and StochasticDepth."""

import keras
from keras import layers, ops

from layers._checks import check_rank


@keras.saving.register_keras_serializable(package="suite")
class DropConnect(layers.Layer):
    """Fully connected layer with DropConnect (Wan et al., ICML 2013):
    training: y = a((M ⊙ W) x + b) with M_ij ~ Bernoulli(1 - rate) drawn per
    example; inference uses the mean network y = a((1 - rate) W x + b)
    (the paper's moment-matched Gaussian inference is approximated by its
    mean, the usual practical choice). Input (batch, features)."""

    def __init__(self, units, rate=0.5, activation=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"DropConnect expects 0 <= rate < 1, got {rate}")
        self.units = int(units)
        self.rate = float(rate)
        self.activation = keras.activations.get(activation)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        check_rank(self, input_shape, 2, "(batch, features)")
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), name="kernel")
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros", name="bias")
        super().build(input_shape)

    def call(self, inputs, training=None):
        if training and self.rate > 0:
            # One mask per example: (batch, in, out), as in the paper.
            shape = (ops.shape(inputs)[0],) + tuple(self.kernel.shape)
            keep = keras.random.uniform(shape, seed=self.seed_generator, dtype=self.compute_dtype) >= self.rate
            w = ops.where(keep, self.kernel[None], ops.zeros_like(self.kernel[None]))
            z = ops.einsum("bi,bio->bo", inputs, w)
        else:
            z = ops.matmul(inputs, self.kernel) * (1.0 - self.rate)
        return self.activation(z + self.bias)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, rate=self.rate, activation=keras.activations.serialize(self.activation),
                      seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="suite")
class StochasticDepth(layers.Layer):
    """Stochastic depth (Huang et al., "Deep Networks with Stochastic Depth",
    ECCV 2016, Eq. 2 and 5). Inputs [shortcut, residual]:
    training: y = shortcut + b · residual, b ~ Bernoulli(survival_probability)
    per example; inference: y = shortcut + p · residual. (The caller applies
    any post-addition activation.)"""

    def __init__(self, survival_probability=0.8, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 < survival_probability <= 1.0:
            raise ValueError(f"StochasticDepth expects 0 < survival_probability <= 1, got {survival_probability}")
        self.survival_probability = float(survival_probability)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        if not (isinstance(input_shape, (list, tuple)) and len(input_shape) == 2
                and isinstance(input_shape[0], (list, tuple))):
            raise ValueError(f"StochasticDepth expects two inputs [shortcut, residual] of the same shape, "
                             f"got {input_shape}")
        if tuple(input_shape[0][1:]) != tuple(input_shape[1][1:]):
            raise ValueError(f"StochasticDepth expects shortcut and residual of the same shape, "
                             f"got {tuple(input_shape[0])} and {tuple(input_shape[1])}")
        super().build(input_shape)

    def call(self, inputs, training=None):
        shortcut, residual = inputs
        p = self.survival_probability
        if training:
            shape = (ops.shape(residual)[0],) + (1,) * (len(residual.shape) - 1)
            b = ops.cast(keras.random.uniform(shape, seed=self.seed_generator) < p, residual.dtype)
            return shortcut + b * residual
        return shortcut + p * residual

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        config = super().get_config()
        config.update(survival_probability=self.survival_probability, seed=self.seed)
        return config
