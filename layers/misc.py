"""Other layers: Maxout, Perceptron, GramMatrix, GuidedReLU."""

import keras
from keras import layers, ops

from layers._checks import check_rank


@keras.saving.register_keras_serializable(package="suite")
class Maxout(layers.Layer):
    """Maxout unit (Goodfellow et al., ICML 2013, Eq. 1):
    h_i(x) = max_{j∈[1,k]} (x^T W_{·ij} + b_ij). Input (batch, features);
    output (batch, units)."""

    def __init__(self, units, pieces=2, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.pieces = int(pieces)

    def build(self, input_shape):
        check_rank(self, input_shape, 2, "(batch, features)")
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units, self.pieces), name="kernel")
        self.bias = self.add_weight(shape=(self.units, self.pieces), initializer="zeros", name="bias")
        super().build(input_shape)

    def call(self, inputs):
        z = ops.einsum("bf,fuk->buk", inputs, self.kernel) + self.bias
        return ops.max(z, axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, pieces=self.pieces)
        return config


@keras.saving.register_keras_serializable(package="suite")
class Perceptron(layers.Layer):
    """Rosenblatt's perceptron (1958): y = sign(w·x + b) in {-1, +1}
    (sign(0) taken as +1). The sign has zero gradient almost everywhere: it is
    trained with the perceptron rule (``perceptron_update``), not backprop."""

    def __init__(self, units=1, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)

    def build(self, input_shape):
        check_rank(self, input_shape, 2, "(batch, features)")
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), name="kernel")
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros", name="bias")
        super().build(input_shape)

    def call(self, inputs):
        z = ops.matmul(inputs, self.kernel) + self.bias
        return ops.where(z >= 0, ops.ones_like(z), -ops.ones_like(z))

    def perceptron_update(self, x, y, learning_rate=1.0):
        """One perceptron-rule step on a batch: w += lr Σ (y - ŷ)/2 · x for
        the misclassified examples (labels y in {-1, +1}). Returns #errors."""
        x = ops.convert_to_tensor(x, self.compute_dtype)
        y = ops.convert_to_tensor(y, self.compute_dtype)
        err = (y - self(x)) / 2.0
        self.kernel.assign_add(learning_rate * ops.matmul(ops.transpose(x), err))
        self.bias.assign_add(learning_rate * ops.sum(err, axis=0))
        return int(ops.convert_to_numpy(ops.sum(ops.abs(err))))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units)
        return config


@keras.saving.register_keras_serializable(package="suite")
class GramMatrix(layers.Layer):
    """Gram matrix of feature maps (Gatys et al., "A Neural Algorithm of
    Artistic Style", 2015, Eq. 3): G_ij = Σ_k F_ik F_jk, here divided by the
    number of positions H·W (``normalize=True``) so it does not scale with
    image size. Input (batch, H, W, C); output (batch, C, C)."""

    def __init__(self, normalize=True, **kwargs):
        super().__init__(**kwargs)
        self.normalize = bool(normalize)

    def build(self, input_shape):
        check_rank(self, input_shape, 4, "(batch, height, width, channels)")
        super().build(input_shape)

    def call(self, inputs):
        g = ops.einsum("bhwi,bhwj->bij", inputs, inputs)
        if self.normalize:
            g = g / ops.cast(ops.shape(inputs)[1] * ops.shape(inputs)[2], g.dtype)
        return g

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(normalize=self.normalize)
        return config


@keras.saving.register_keras_serializable(package="suite")
class GuidedReLU(layers.Layer):
    """ReLU with the guided-backpropagation gradient (Springenberg et al.,
    "Striving for Simplicity", 2015, Fig. 1): forward max(x, 0); backward
    passes the incoming gradient only where both x > 0 and the gradient > 0."""

    def call(self, inputs):
        return _guided_relu(inputs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


@keras.ops.custom_gradient
def _guided_relu(x):
    def grad(*args, upstream=None):
        upstream = args[0] if upstream is None else upstream
        return upstream * ops.cast(x > 0, upstream.dtype) * ops.cast(upstream > 0, upstream.dtype)

    return ops.relu(x), grad
