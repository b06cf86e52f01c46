"""Convolutions that cost less than a plain k x k conv for what they see:
dilated (atrous) convolutions, depthwise-separable convolutions, and the
factorised Inception v3 modules. All blocks take NHWC inputs and use
"same" padding.

* ``DilatedConvBlock``: a k x k conv whose taps are ``dilation_rate`` pixels
  apart (Yu & Koltun 2016; DeepLab, Chen et al. 2017): the receptive field of
  a (k-1)*r+1 kernel for the weights of a k x k one, at full resolution.
* ``SeparableConvBlock``: MobileNet v1 (Howard et al. 2017, Fig. 3): depthwise
  k x k -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU; k*k*C + C*C' weights
  instead of a full conv's k*k*C*C'.
* ``FactorizedInceptionBlock``, ``GridReductionBlock``: Szegedy et al.,
  "Rethinking the Inception Architecture" (2016), Fig. 5, 6 and 10.
"""

import keras
from keras import layers, ops

from layers.blocks import _Block, _bn, same_padding_output_shape


class _ConvUnits(_Block):
    """Base for blocks made of conv -> BN -> ReLU units (the unit every
    Inception v3 and MobileNet conv is)."""

    def _unit(self, filters, kernel, name, strides=1, dilation_rate=1, momentum=0.99):
        conv = layers.Conv2D(filters, kernel, strides=strides, padding="same", dilation_rate=dilation_rate,
                             use_bias=not self.use_batchnorm, kernel_initializer="he_normal", name=f"{name}_conv",
                             dtype=self.dtype_policy)
        if self.use_batchnorm:
            norm = layers.BatchNormalization(momentum=momentum, name=f"{name}_bn", dtype=self.dtype_policy)
        else:  # Identity keeps call() free of branches
            norm = layers.Identity(name=f"{name}_bn", dtype=self.dtype_policy)
        return conv, norm

    @staticmethod
    def _build_units(units, shape):
        """Build a chain of units on `shape`; returns the chain's output shape."""
        for conv, norm in units:
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
            norm.build(shape)
        return shape

    @staticmethod
    def _run(units, x, training):
        for conv, norm in units:
            x = ops.relu(norm(conv(x), training=training))
        return x


@keras.saving.register_keras_serializable(package="suite")
class DilatedConvBlock(_ConvUnits):
    """Dilated (atrous) conv -> BN -> activation. A k x k kernel with rate r
    reads the input at offsets r*(i - (k-1)/2): it is the (k-1)*r+1 square
    kernel with r-1 zeros between the taps. Stacking rates 1, 2, 4, 8 of 3x3
    grows the receptive field to 31 pixels in four layers without pooling
    (Yu & Koltun 2016, the "context module")."""

    def __init__(self, filters, kernel_size=3, dilation_rate=2, use_batchnorm=True, activation="relu",
                 batchnorm_momentum=0.99, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.dilation_rate = int(dilation_rate)
        self.use_batchnorm = bool(use_batchnorm)
        self.activation = activation
        self.batchnorm_momentum = float(batchnorm_momentum)
        if self.dilation_rate < 1:
            raise ValueError(f"DilatedConvBlock expects dilation_rate >= 1, got {dilation_rate}")

    def build(self, input_shape):
        self._check(input_shape)
        self.conv, self.norm = self._unit(self.filters, self.kernel_size, "dilated",
                                          dilation_rate=self.dilation_rate, momentum=self.batchnorm_momentum)
        self._build_units([(self.conv, self.norm)], tuple(input_shape))
        self._activation = keras.activations.get(self.activation)
        super().build(input_shape)

    def call(self, inputs, training=None):
        return self._activation(self.norm(self.conv(inputs), training=training))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size, dilation_rate=self.dilation_rate,
                      use_batchnorm=self.use_batchnorm, activation=self.activation,
                      batchnorm_momentum=self.batchnorm_momentum)
        return config


@keras.saving.register_keras_serializable(package="suite")
class SeparableConvBlock(_ConvUnits):
    """Depthwise-separable conv of MobileNet v1 (Howard et al. 2017, Fig. 3):
    a k x k depthwise conv (one filter per input channel, `depth_multiplier`
    of them, carrying the stride) -> BN -> ReLU, then a 1x1 pointwise conv
    mixing the channels -> BN -> ReLU. Weights: k*k*C*m + C*m*C' against a
    full conv's k*k*C*C', a ratio of 1/C' + 1/k^2 for m = 1 (Sec. 3.1)."""

    def __init__(self, filters, kernel_size=3, strides=1, depth_multiplier=1, use_batchnorm=True, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.depth_multiplier = int(depth_multiplier)
        self.use_batchnorm = bool(use_batchnorm)

    def build(self, input_shape):
        self._check(input_shape)
        self.depthwise = layers.DepthwiseConv2D(self.kernel_size, strides=self.strides, padding="same",
                                                depth_multiplier=self.depth_multiplier,
                                                use_bias=not self.use_batchnorm, depthwise_initializer="he_normal",
                                                name="depthwise", dtype=self.dtype_policy)
        self.depthwise_norm = _bn(self.use_batchnorm, "depthwise_bn", self.dtype_policy)
        self.pointwise, self.pointwise_norm = self._unit(self.filters, 1, "pointwise")
        self._build_units([(self.depthwise, self.depthwise_norm), (self.pointwise, self.pointwise_norm)],
                          tuple(input_shape))
        super().build(input_shape)

    def call(self, inputs, training=None):
        return self._run([(self.depthwise, self.depthwise_norm), (self.pointwise, self.pointwise_norm)], inputs,
                         training)

    def compute_output_shape(self, input_shape):
        return same_padding_output_shape(input_shape, self.strides, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size, strides=self.strides,
                      depth_multiplier=self.depth_multiplier, use_batchnorm=self.use_batchnorm)
        return config


@keras.saving.register_keras_serializable(package="suite")
class FactorizedInceptionBlock(_ConvUnits):
    """Inception v3 module (Szegedy et al. 2016), four branches concatenated
    on channels, every conv a conv -> BN -> ReLU unit:

    * 1x1 (`filters_1x1`);
    * 1x1 (`filters_3x3_reduce`) -> 3x3 (`filters_3x3`);
    * 1x1 (`filters_double_reduce`) -> 3x3 -> 3x3 (`filters_double`): the 5x5
      of Inception v1 as two 3x3, the same 5x5 receptive field for 18/25 of
      the weights (Fig. 5);
    * 3x3 average pooling (stride 1) -> 1x1 (`filters_pool_proj`).

    ``asymmetric=n`` replaces every 3x3 by 1xn -> nx1 (Fig. 6): an n x n
    receptive field for 2n instead of n^2 weights per channel pair, so the
    single branch sees n x n and the double branch (2n-1) x (2n-1). The
    paper uses it on medium grids (n = 7 on 17x17).
    """

    def __init__(self, filters_1x1, filters_3x3_reduce, filters_3x3, filters_double_reduce, filters_double,
                 filters_pool_proj, asymmetric=None, use_batchnorm=True, **kwargs):
        super().__init__(**kwargs)
        self.filters_1x1 = int(filters_1x1)
        self.filters_3x3_reduce = int(filters_3x3_reduce)
        self.filters_3x3 = int(filters_3x3)
        self.filters_double_reduce = int(filters_double_reduce)
        self.filters_double = int(filters_double)
        self.filters_pool_proj = int(filters_pool_proj)
        self.asymmetric = None if asymmetric is None else int(asymmetric)
        self.use_batchnorm = bool(use_batchnorm)
        if self.asymmetric is not None and self.asymmetric < 2:
            raise ValueError(f"FactorizedInceptionBlock expects asymmetric=None or n >= 2, got {asymmetric}")

    def _factorized(self, filters, name):
        """One 3x3, or 1xn -> nx1 when asymmetric."""
        n = self.asymmetric
        if n is None:
            return [self._unit(filters, 3, f"{name}_3x3")]
        return [self._unit(filters, (1, n), f"{name}_1x{n}"), self._unit(filters, (n, 1), f"{name}_{n}x1")]

    def build(self, input_shape):
        self._check(input_shape)
        shape = tuple(input_shape)
        self.branch_1x1 = [self._unit(self.filters_1x1, 1, "b1")]
        self.branch_single = [self._unit(self.filters_3x3_reduce, 1, "b3_reduce"),
                              *self._factorized(self.filters_3x3, "b3")]
        self.branch_double = [self._unit(self.filters_double_reduce, 1, "bd_reduce"),
                              *self._factorized(self.filters_double, "bd_a"),
                              *self._factorized(self.filters_double, "bd_b")]
        self.branch_pool = [self._unit(self.filters_pool_proj, 1, "pool_proj")]
        for branch in self.branches:
            self._build_units(branch, shape)
        super().build(input_shape)

    @property
    def branches(self):
        return [self.branch_1x1, self.branch_single, self.branch_double, self.branch_pool]

    def call(self, inputs, training=None):
        pooled = ops.average_pool(inputs, 3, strides=1, padding="same")
        return ops.concatenate([self._run(self.branch_1x1, inputs, training),
                                self._run(self.branch_single, inputs, training),
                                self._run(self.branch_double, inputs, training),
                                self._run(self.branch_pool, pooled, training)], axis=-1)

    def compute_output_shape(self, input_shape):
        c = self.filters_1x1 + self.filters_3x3 + self.filters_double + self.filters_pool_proj
        return tuple(input_shape[:-1]) + (c,)

    def get_config(self):
        config = super().get_config()
        config.update(filters_1x1=self.filters_1x1, filters_3x3_reduce=self.filters_3x3_reduce,
                      filters_3x3=self.filters_3x3, filters_double_reduce=self.filters_double_reduce,
                      filters_double=self.filters_double, filters_pool_proj=self.filters_pool_proj,
                      asymmetric=self.asymmetric, use_batchnorm=self.use_batchnorm)
        return config


@keras.saving.register_keras_serializable(package="suite")
class GridReductionBlock(_ConvUnits):
    """Inception v3 grid-size reduction (Szegedy et al. 2016, Fig. 10): halve
    the grid while widening it, without the representational bottleneck of
    pooling first nor the cost of convolving first. Three parallel stride-2
    branches, concatenated on channels:

    * 1x1 (`filters_3x3_reduce`) -> 3x3 stride 2 (`filters_3x3`);
    * 1x1 (`filters_double_reduce`) -> 3x3 -> 3x3 stride 2 (`filters_double`);
    * 3x3 max pooling, stride 2 (keeps the input's channels).

    Output: ceil(H/2) x ceil(W/2) x (filters_3x3 + filters_double + C_in).
    "same" padding (the paper's "valid" 35 -> 17 shaves a border that a
    28x28 image cannot spare).
    """

    def __init__(self, filters_3x3_reduce, filters_3x3, filters_double_reduce, filters_double, use_batchnorm=True,
                 **kwargs):
        super().__init__(**kwargs)
        self.filters_3x3_reduce = int(filters_3x3_reduce)
        self.filters_3x3 = int(filters_3x3)
        self.filters_double_reduce = int(filters_double_reduce)
        self.filters_double = int(filters_double)
        self.use_batchnorm = bool(use_batchnorm)

    def build(self, input_shape):
        self._check(input_shape)
        shape = tuple(input_shape)
        self.branch_single = [self._unit(self.filters_3x3_reduce, 1, "b3_reduce"),
                              self._unit(self.filters_3x3, 3, "b3_3x3_s2", strides=2)]
        self.branch_double = [self._unit(self.filters_double_reduce, 1, "bd_reduce"),
                              self._unit(self.filters_double, 3, "bd_3x3"),
                              self._unit(self.filters_double, 3, "bd_3x3_s2", strides=2)]
        for branch in (self.branch_single, self.branch_double):
            self._build_units(branch, shape)
        super().build(input_shape)

    def call(self, inputs, training=None):
        return ops.concatenate([self._run(self.branch_single, inputs, training),
                                self._run(self.branch_double, inputs, training),
                                ops.max_pool(inputs, 3, strides=2, padding="same")], axis=-1)

    def compute_output_shape(self, input_shape):
        half = lambda d: None if d is None else -(-d // 2)
        return (input_shape[0], half(input_shape[1]), half(input_shape[2]),
                self.filters_3x3 + self.filters_double + input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(filters_3x3_reduce=self.filters_3x3_reduce, filters_3x3=self.filters_3x3,
                      filters_double_reduce=self.filters_double_reduce, filters_double=self.filters_double,
                      use_batchnorm=self.use_batchnorm)
        return config
