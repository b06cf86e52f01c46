"""Architecture blocks: residual, inception, dense, squeeze-excitation,
ResNeXt and network-in-network blocks. All blocks take NHWC inputs.
"""

import keras
from keras import layers, ops

from layers._checks import check_rank

_NHWC = "(batch, height, width, channels)"


def same_padding_output_shape(input_shape, strides, channels):
    """(batch, ⌈H/s⌉, ⌈W/s⌉, channels): the shape after a "same"-padded stride-s stage (None stays None)."""
    h, w = (None if d is None else -(-d // strides) for d in input_shape[1:3])
    return (input_shape[0], h, w, channels)


def _bn(use_batchnorm, name, dtype=None):
    # Identity stands in when batch norm is off so call() has no branches.
    if use_batchnorm:
        return layers.BatchNormalization(name=name, dtype=dtype)
    return layers.Identity(name=name, dtype=dtype)


@keras.saving.register_keras_serializable(package="suite")
class ResidualBlock(layers.Layer):
    """Residual block of He et al., "Deep Residual Learning for Image
    Recognition" (2016): ``y = F(x) + shortcut(x)``.

    * basic: two 3x3 convs, output channels ``filters``;
    * bottleneck: 1x1 (filters) -> 3x3 (filters) -> 1x1 (4*filters);
    * ``preactivation=True`` follows He et al. "Identity Mappings in Deep
      Residual Networks" (2016): BN-ReLU before each conv, no ReLU after the
      addition.

    ``projection=None`` uses a 1x1 conv projection shortcut (option B of the
    paper) only when ``strides != 1`` or the channel count changes;
    ``True``/``False`` force it on/off (off requires matching shapes).
    The stride sits on the 3x3 conv (the "ResNet v1.5" placement).
    ``dropout`` > 0 puts dropout between the convs, after the ReLU that feeds
    the next conv (Wide ResNet, Zagoruyko & Komodakis 2016, Sec. 2.4):
    active in training, the identity at inference.
    """

    expansion_bottleneck = 4

    def __init__(self, filters, strides=1, bottleneck=False, projection=None,
                 preactivation=False, use_batchnorm=True, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"ResidualBlock expects 0 <= dropout < 1, got {dropout}")
        self.dropout = float(dropout)
        self.filters = int(filters)
        self.strides = int(strides)
        self.bottleneck = bool(bottleneck)
        self.projection = projection
        self.preactivation = bool(preactivation)
        self.use_batchnorm = bool(use_batchnorm)
        self.out_channels = self.filters * (self.expansion_bottleneck if self.bottleneck else 1)

    def build(self, input_shape):
        check_rank(self, input_shape, 4, _NHWC)
        in_ch = input_shape[-1]
        if in_ch is None:
            raise ValueError(
                f"ResidualBlock expects a 4-D input {_NHWC} with a known channel count, got shape {tuple(input_shape)}")
        use_proj = self.projection
        if use_proj is None:
            use_proj = self.strides != 1 or in_ch != self.out_channels
        elif not use_proj and (self.strides != 1 or in_ch != self.out_channels):
            raise ValueError(
                f"ResidualBlock with projection=False expects input channels {self.out_channels} and strides=1, "
                f"got shape {tuple(input_shape)} and strides={self.strides}")
        self.use_projection = bool(use_proj)
        bias = not self.use_batchnorm
        conv = lambda f, k, s, n: layers.Conv2D(f, k, strides=s, padding="same", use_bias=bias,
                                                kernel_initializer="he_normal", name=n,
                                                dtype=self.dtype_policy)
        if self.bottleneck:
            specs = [(self.filters, 1, 1), (self.filters, 3, self.strides), (self.out_channels, 1, 1)]
        else:
            specs = [(self.filters, 3, self.strides), (self.filters, 3, 1)]
        self.convs = [conv(f, k, s, f"conv{i}") for i, (f, k, s) in enumerate(specs)]
        self.norms = [_bn(self.use_batchnorm, f"bn{i}", self.dtype_policy) for i in range(len(specs))]
        # Weightless, so a saved block without dropout loads into one with it and back.
        self.dropout_layer = layers.Dropout(self.dropout, name="dropout", dtype=self.dtype_policy)
        shape = tuple(input_shape)
        for c, n in zip(self.convs, self.norms):
            if self.preactivation:
                n.build(shape)
                c.build(shape)
                shape = c.compute_output_shape(shape)
            else:
                c.build(shape)
                shape = c.compute_output_shape(shape)
                n.build(shape)
        if self.use_projection:
            self.proj_conv = conv(self.out_channels, 1, self.strides, "proj_conv")
            self.proj_conv.build(tuple(input_shape))
            if self.preactivation:
                self.proj_norm = None
            else:
                self.proj_norm = _bn(self.use_batchnorm, "proj_bn", self.dtype_policy)
                self.proj_norm.build(self.proj_conv.compute_output_shape(tuple(input_shape)))
        super().build(input_shape)

    def call(self, inputs, training=None):
        x = inputs
        if self.preactivation:
            # Pre-activation: the shortcut taps the BN-ReLU'd input when projecting,
            # as in the reference implementation of He et al. (2016b).
            shortcut = inputs
            for i, (c, n) in enumerate(zip(self.convs, self.norms)):
                x = ops.relu(n(x, training=training))
                if i == 0 and self.use_projection:
                    shortcut = self.proj_conv(x)
                x = c(self._drop(x, i, training))
            return x + shortcut
        for i, (c, n) in enumerate(zip(self.convs, self.norms)):
            x = n(c(self._drop(x, i, training)), training=training)
            if i < len(self.convs) - 1:
                x = ops.relu(x)
        shortcut = inputs
        if self.use_projection:
            shortcut = self.proj_norm(self.proj_conv(inputs), training=training)
        return ops.relu(x + shortcut)

    def _drop(self, x, i, training):
        """Dropout on the input of every conv but the first: between the convs."""
        return self.dropout_layer(x, training=training) if i > 0 and self.dropout else x

    def compute_output_shape(self, input_shape):
        return same_padding_output_shape(input_shape, self.strides, self.out_channels)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, strides=self.strides, bottleneck=self.bottleneck,
                      projection=self.projection, preactivation=self.preactivation,
                      use_batchnorm=self.use_batchnorm, dropout=self.dropout)
        return config


class _Block(layers.Layer):
    """Base for NHWC blocks: validates the input rank and builds sublayers
    with the block's dtype policy (so float64 gradient checks stay float64)."""

    def _conv(self, filters, kernel, strides=1, use_bias=True, groups=1, activation=None, name=None):
        return layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=use_bias, groups=groups,
                             activation=activation, kernel_initializer="he_normal", name=name,
                             dtype=self.dtype_policy)

    def _check(self, input_shape):
        check_rank(self, input_shape, 4, _NHWC)
        if input_shape[-1] is None:
            raise ValueError(f"{type(self).__name__} expects a 4-D input {_NHWC} with a known channel count, "
                             f"got shape {tuple(input_shape)}")


@keras.saving.register_keras_serializable(package="suite")
class InceptionBlock(_Block):
    """Inception module with dimension reductions (Szegedy et al., "Going
    Deeper with Convolutions", 2015, Fig. 2b): four parallel branches
    concatenated on channels -- 1x1; 1x1 -> 3x3; 1x1 -> 5x5; 3x3 max-pool
    (stride 1) -> 1x1. Every conv is followed by ReLU.
    """

    def __init__(self, filters_1x1, filters_3x3_reduce, filters_3x3, filters_5x5_reduce, filters_5x5,
                 filters_pool_proj, **kwargs):
        super().__init__(**kwargs)
        self.filters_1x1 = int(filters_1x1)
        self.filters_3x3_reduce = int(filters_3x3_reduce)
        self.filters_3x3 = int(filters_3x3)
        self.filters_5x5_reduce = int(filters_5x5_reduce)
        self.filters_5x5 = int(filters_5x5)
        self.filters_pool_proj = int(filters_pool_proj)

    def build(self, input_shape):
        self._check(input_shape)
        shape = tuple(input_shape)
        self.b1 = self._conv(self.filters_1x1, 1, activation="relu", name="b1_1x1")
        self.b3r = self._conv(self.filters_3x3_reduce, 1, activation="relu", name="b3_reduce")
        self.b3 = self._conv(self.filters_3x3, 3, activation="relu", name="b3_3x3")
        self.b5r = self._conv(self.filters_5x5_reduce, 1, activation="relu", name="b5_reduce")
        self.b5 = self._conv(self.filters_5x5, 5, activation="relu", name="b5_5x5")
        self.bp = self._conv(self.filters_pool_proj, 1, activation="relu", name="pool_proj")
        for conv in (self.b1, self.b3r, self.b5r, self.bp):
            conv.build(shape)
        self.b3.build(shape[:-1] + (self.filters_3x3_reduce,))
        self.b5.build(shape[:-1] + (self.filters_5x5_reduce,))
        super().build(input_shape)

    def call(self, inputs):
        pooled = ops.max_pool(inputs, 3, strides=1, padding="same")
        return ops.concatenate([self.b1(inputs), self.b3(self.b3r(inputs)), self.b5(self.b5r(inputs)),
                                self.bp(pooled)], axis=-1)

    def compute_output_shape(self, input_shape):
        c = self.filters_1x1 + self.filters_3x3 + self.filters_5x5 + self.filters_pool_proj
        return tuple(input_shape[:-1]) + (c,)

    def get_config(self):
        config = super().get_config()
        config.update(filters_1x1=self.filters_1x1, filters_3x3_reduce=self.filters_3x3_reduce,
                      filters_3x3=self.filters_3x3, filters_5x5_reduce=self.filters_5x5_reduce,
                      filters_5x5=self.filters_5x5, filters_pool_proj=self.filters_pool_proj)
        return config


@keras.saving.register_keras_serializable(package="suite")
class DenseBlock(_Block):
    """Dense block of Huang et al., "Densely Connected Convolutional
    Networks" (2017): layer l sees the concatenation of all earlier feature
    maps, x_l = H_l([x_0, ..., x_{l-1}]), with H = BN-ReLU-Conv3x3(growth_rate)
    (DenseNet-B adds BN-ReLU-Conv1x1(4*growth_rate) first).
    Output channels: in_channels + num_layers * growth_rate.
    """

    def __init__(self, num_layers, growth_rate, bottleneck=False, use_batchnorm=True, **kwargs):
        super().__init__(**kwargs)
        self.num_layers = int(num_layers)
        self.growth_rate = int(growth_rate)
        self.bottleneck = bool(bottleneck)
        self.use_batchnorm = bool(use_batchnorm)

    def build(self, input_shape):
        self._check(input_shape)
        shape = tuple(input_shape)
        self.units = []
        for i in range(self.num_layers):
            unit = []
            if self.bottleneck:
                unit.append((_bn(self.use_batchnorm, f"bn{i}a", self.dtype_policy),
                             self._conv(4 * self.growth_rate, 1, use_bias=not self.use_batchnorm, name=f"conv{i}a")))
            unit.append((_bn(self.use_batchnorm, f"bn{i}", self.dtype_policy),
                         self._conv(self.growth_rate, 3, use_bias=not self.use_batchnorm, name=f"conv{i}")))
            s = shape
            for norm, conv in unit:
                norm.build(s)
                conv.build(s)
                s = conv.compute_output_shape(s)
            shape = shape[:-1] + (shape[-1] + self.growth_rate,)
            self.units.append(unit)
        super().build(input_shape)

    def call(self, inputs, training=None):
        x = inputs
        for unit in self.units:
            h = x
            for norm, conv in unit:
                h = conv(ops.relu(norm(h, training=training)))
            x = ops.concatenate([x, h], axis=-1)
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (input_shape[-1] + self.num_layers * self.growth_rate,)

    def get_config(self):
        config = super().get_config()
        config.update(num_layers=self.num_layers, growth_rate=self.growth_rate, bottleneck=self.bottleneck,
                      use_batchnorm=self.use_batchnorm)
        return config


@keras.saving.register_keras_serializable(package="suite")
class TransitionLayer(_Block):
    """DenseNet transition (Huang et al. 2017, Sec. 3): BN-ReLU-Conv1x1 to
    floor(compression * channels) then 2x2 average pooling, stride 2."""

    def __init__(self, compression=0.5, use_batchnorm=True, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 < compression <= 1.0:
            raise ValueError(f"TransitionLayer expects 0 < compression <= 1, got {compression}")
        self.compression = float(compression)
        self.use_batchnorm = bool(use_batchnorm)

    def build(self, input_shape):
        self._check(input_shape)
        self.out_channels = max(1, int(input_shape[-1] * self.compression))
        self.norm = _bn(self.use_batchnorm, "bn", self.dtype_policy)
        self.norm.build(tuple(input_shape))
        self.conv = self._conv(self.out_channels, 1, use_bias=not self.use_batchnorm, name="conv")
        self.conv.build(tuple(input_shape))
        super().build(input_shape)

    def call(self, inputs, training=None):
        x = self.conv(ops.relu(self.norm(inputs, training=training)))
        return ops.average_pool(x, 2, strides=2, padding="valid")

    def compute_output_shape(self, input_shape):
        half = lambda d: None if d is None else d // 2
        return (input_shape[0], half(input_shape[1]), half(input_shape[2]),
                max(1, int(input_shape[-1] * self.compression)))

    def get_config(self):
        config = super().get_config()
        config.update(compression=self.compression, use_batchnorm=self.use_batchnorm)
        return config


@keras.saving.register_keras_serializable(package="suite")
class SqueezeExcitation(_Block):
    """Squeeze-and-Excitation (Hu et al., 2018, Eq. 2-4):
    s = sigmoid(W2 relu(W1 GAP(x))), y = s * x, with W1: C -> C/ratio."""

    def __init__(self, ratio=16, **kwargs):
        super().__init__(**kwargs)
        self.ratio = int(ratio)

    def build(self, input_shape):
        self._check(input_shape)
        channels = input_shape[-1]
        self.squeeze = layers.Dense(max(1, channels // self.ratio), activation="relu", name="squeeze",
                                    dtype=self.dtype_policy)
        self.excite = layers.Dense(channels, activation="sigmoid", name="excite", dtype=self.dtype_policy)
        self.squeeze.build((None, channels))
        self.excite.build((None, max(1, channels // self.ratio)))
        super().build(input_shape)

    def call(self, inputs):
        s = self.excite(self.squeeze(ops.mean(inputs, axis=(1, 2))))
        return inputs * s[:, None, None, :]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(ratio=self.ratio)
        return config


@keras.saving.register_keras_serializable(package="suite")
class ResNeXtBlock(_Block):
    """ResNeXt bottleneck (Xie et al., "Aggregated Residual Transformations",
    2017, Fig. 3c): 1x1 (cardinality*group_width) -> grouped 3x3 with
    ``cardinality`` groups -> 1x1 (filters), BN after each conv, added to
    the shortcut (1x1 projection when strides != 1 or channels change), ReLU.
    """

    def __init__(self, filters, cardinality=4, group_width=2, strides=1, use_batchnorm=True, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.cardinality = int(cardinality)
        self.group_width = int(group_width)
        self.strides = int(strides)
        self.use_batchnorm = bool(use_batchnorm)

    def build(self, input_shape):
        self._check(input_shape)
        shape = tuple(input_shape)
        width = self.cardinality * self.group_width
        bias = not self.use_batchnorm
        self.convs = [self._conv(width, 1, use_bias=bias, name="conv_reduce"),
                      self._conv(width, 3, strides=self.strides, use_bias=bias, groups=self.cardinality,
                                 name="conv_grouped"),
                      self._conv(self.filters, 1, use_bias=bias, name="conv_expand")]
        self.norms = [_bn(self.use_batchnorm, f"bn{i}", self.dtype_policy) for i in range(3)]
        for conv, norm in zip(self.convs, self.norms):
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
            norm.build(shape)
        self.use_projection = self.strides != 1 or input_shape[-1] != self.filters
        if self.use_projection:
            self.proj_conv = self._conv(self.filters, 1, strides=self.strides, use_bias=bias, name="proj_conv")
            self.proj_conv.build(tuple(input_shape))
            self.proj_norm = _bn(self.use_batchnorm, "proj_bn", self.dtype_policy)
            self.proj_norm.build(shape)
        super().build(input_shape)

    def call(self, inputs, training=None):
        x = inputs
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            x = norm(conv(x), training=training)
            if i < 2:
                x = ops.relu(x)
        shortcut = inputs
        if self.use_projection:
            shortcut = self.proj_norm(self.proj_conv(inputs), training=training)
        return ops.relu(x + shortcut)

    def compute_output_shape(self, input_shape):
        return same_padding_output_shape(input_shape, self.strides, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, cardinality=self.cardinality, group_width=self.group_width,
                      strides=self.strides, use_batchnorm=self.use_batchnorm)
        return config


@keras.saving.register_keras_serializable(package="suite")
class NiNBlock(_Block):
    """mlpconv block of Lin et al., "Network In Network" (2014): a kxk conv
    followed by 1x1 convs (a per-pixel MLP across channels), ReLU after each.
    """

    def __init__(self, filters, kernel_size=3, mlp_filters=None, strides=1, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.mlp_filters = [int(f) for f in (mlp_filters if mlp_filters is not None else (filters, filters))]
        self.strides = int(strides)

    def build(self, input_shape):
        self._check(input_shape)
        shape = tuple(input_shape)
        self.convs = [self._conv(self.filters, self.kernel_size, strides=self.strides, activation="relu",
                                 name="conv")]
        self.convs += [self._conv(f, 1, activation="relu", name=f"mlp{i}") for i, f in enumerate(self.mlp_filters)]
        for conv in self.convs:
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
        super().build(input_shape)

    def call(self, inputs):
        x = inputs
        for conv in self.convs:
            x = conv(x)
        return x

    def compute_output_shape(self, input_shape):
        return same_padding_output_shape(input_shape, self.strides,
                                         self.mlp_filters[-1] if self.mlp_filters else self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size, mlp_filters=list(self.mlp_filters),
                      strides=self.strides)
        return config
