"""Recurrent cells written from their equations, for use in ``keras.layers.RNN``.

Weights use the same layout as Keras' own cells (``kernel``,
``recurrent_kernel``, ``bias``, gates concatenated in Keras' order), so
``keras.layers.SimpleRNN/LSTM/GRU`` and these cells are interchangeable by
``set_weights``.
"""

import keras
from keras import layers, ops

from layers._checks import check_rank


class _Cell(layers.Layer):
    gates = 1

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)

    @property
    def output_size(self):
        return self.units

    def build(self, input_shape):
        # keras.layers.RNN builds the cell with the per-step shape (batch, features).
        check_rank(self, input_shape, 2, "per time step (batch, features); wrap the cell in keras.layers.RNN "
                                         "for (batch, time, features)")
        features = input_shape[-1]
        self.kernel = self.add_weight(shape=(features, self.gates * self.units), initializer="glorot_uniform",
                                      name="kernel")
        self.recurrent_kernel = self.add_weight(shape=(self.units, self.gates * self.units),
                                                initializer="orthogonal", name="recurrent_kernel")
        self.bias = self.add_weight(shape=self._bias_shape(), initializer="zeros", name="bias")
        super().build(input_shape)

    def _bias_shape(self):
        return (self.gates * self.units,)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units)
        return config


@keras.saving.register_keras_serializable(package="suite")
class ElmanCell(_Cell):
    """Elman (simple) recurrent cell (Elman, "Finding Structure in Time",
    1990): h_t = tanh(x_t W + h_{t-1} U + b). Output = h_t."""

    @property
    def state_size(self):
        return self.units

    def call(self, inputs, states, training=None):
        h_prev = states[0] if isinstance(states, (list, tuple)) else states
        h = ops.tanh(ops.matmul(inputs, self.kernel) + ops.matmul(h_prev, self.recurrent_kernel) + self.bias)
        return h, [h]


@keras.saving.register_keras_serializable(package="suite")
class LSTMCell(_Cell):
    """Long short-term memory cell (Hochreiter & Schmidhuber 1997, with the
    forget gate of Gers et al. 2000):
        i = σ(x W_i + h U_i + b_i), f = σ(x W_f + h U_f + b_f),
        g = tanh(x W_c + h U_c + b_c), o = σ(x W_o + h U_o + b_o),
        c_t = f ⊙ c_{t-1} + i ⊙ g,  h_t = o ⊙ tanh(c_t).
    Gate order in the weights: i, f, c, o (as Keras).
    """

    gates = 4

    @property
    def state_size(self):
        return [self.units, self.units]

    def call(self, inputs, states, training=None):
        h_prev, c_prev = states
        z = ops.matmul(inputs, self.kernel) + ops.matmul(h_prev, self.recurrent_kernel) + self.bias
        zi, zf, zc, zo = ops.split(z, 4, axis=-1)
        c = ops.sigmoid(zf) * c_prev + ops.sigmoid(zi) * ops.tanh(zc)
        h = ops.sigmoid(zo) * ops.tanh(c)
        return h, [h, c]


@keras.saving.register_keras_serializable(package="suite")
class GRUCell(_Cell):
    """Gated recurrent unit (Cho et al. 2014), in the "reset after" form that
    Keras (and cuDNN) use by default:
        z = σ(x W_z + b_z + h U_z + b'_z),  r = σ(x W_r + b_r + h U_r + b'_r),
        ĥ = tanh(x W_h + b_h + r ⊙ (h U_h + b'_h)),
        h_t = z ⊙ h_{t-1} + (1 - z) ⊙ ĥ.
    Gate order in the weights: z, r, h; bias has shape (2, 3*units)
    (input bias, recurrent bias) as Keras' ``reset_after=True``.
    """

    gates = 3

    @property
    def state_size(self):
        return self.units

    def _bias_shape(self):
        return (2, 3 * self.units)

    def call(self, inputs, states, training=None):
        h_prev = states[0] if isinstance(states, (list, tuple)) else states
        x_part = ops.matmul(inputs, self.kernel) + self.bias[0]
        h_part = ops.matmul(h_prev, self.recurrent_kernel) + self.bias[1]
        xz, xr, xh = ops.split(x_part, 3, axis=-1)
        hz, hr, hh = ops.split(h_part, 3, axis=-1)
        z = ops.sigmoid(xz + hz)
        r = ops.sigmoid(xr + hr)
        candidate = ops.tanh(xh + r * hh)
        h = z * h_prev + (1.0 - z) * candidate
        return h, [h]
