"""Pooling layers: Lp, stochastic, fractional max, spatial pyramid, max
pooling with argmax + unpooling (SegNet), RoI pooling and RoI align.
All take NHWC feature maps."""

import math

import keras
import numpy as np
from keras import layers, ops

from layers._checks import check_known, check_rank

_NHWC = "(batch, height, width, channels)"


def _pair(v):
    return (int(v), int(v)) if isinstance(v, (int, np.integer)) else tuple(int(a) for a in v)


def _windows(x, k):
    """Non-overlapping k x k windows: (B, H, W, C) -> (B, H//k, W//k, k*k, C).
    Reshape/transpose only, so it lowers to TFLite builtins (ExtractImagePatches is not one)."""
    kh, kw = k
    h, w = x.shape[1] // kh, x.shape[2] // kw
    c = x.shape[3]
    x = x[:, :h * kh, :w * kw, :]
    x = ops.reshape(x, (-1, h, kh, w, kw, c))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, h, w, kh * kw, c))


def _first_argmax(win, top):
    """Index of the first maximum along axis 3. ops.argmax on TF lowers to a
    BitwiseAnd (its -0.0 handling) that TFLite has no builtin for."""
    k = win.shape[3]
    positions = ops.reshape(ops.arange(k, dtype="int32"), (1, 1, 1, k, 1))
    hit = ops.equal(win, ops.expand_dims(top, 3))
    return ops.min(ops.where(hit, positions, k), axis=3)


class _Pool(layers.Layer):
    def _check(self, input_shape, need_static=True):
        check_rank(self, input_shape, 4, _NHWC)
        if need_static:
            check_known(self, input_shape, (1, 2, 3), "a 4-D input " + _NHWC)


@keras.saving.register_keras_serializable(package="suite")
class LpPooling2D(_Pool):
    """Lp pooling (Hyvärinen & Köster 2007; Sermanet et al. 2012):
    y = (Σ_{window} |x|^p)^(1/p). p=1 is sum pooling, p->inf max pooling.
    Windows are 'valid' (no padding), so every window sums the same count."""

    def __init__(self, p=2.0, pool_size=2, strides=None, **kwargs):
        super().__init__(**kwargs)
        self.p = float(p)
        self.pool_size = _pair(pool_size)
        self.strides = _pair(strides if strides is not None else pool_size)

    def build(self, input_shape):
        self._check(input_shape, need_static=False)
        super().build(input_shape)

    def call(self, inputs):
        area = self.pool_size[0] * self.pool_size[1]
        powered = ops.power(ops.abs(inputs), self.p)
        total = ops.average_pool(powered, self.pool_size, strides=self.strides, padding="valid") * area
        return ops.power(total, 1.0 / self.p)

    def compute_output_shape(self, input_shape):
        out = [None if d is None else (d - k) // s + 1
               for d, k, s in zip(input_shape[1:3], self.pool_size, self.strides)]
        return (input_shape[0], out[0], out[1], input_shape[3])

    def get_config(self):
        config = super().get_config()
        config.update(p=self.p, pool_size=list(self.pool_size), strides=list(self.strides))
        return config


@keras.saving.register_keras_serializable(package="suite")
class StochasticPooling2D(_Pool):
    """Stochastic pooling (Zeiler & Fergus, ICLR 2013) over non-overlapping
    windows of non-negative activations (e.g. after ReLU):
    p_i = a_i / Σ_j a_j; training samples one a_i ~ Multinomial(p);
    inference returns the probability-weighted average Σ_i p_i a_i
    = Σ a_i² / Σ a_i (Eq. 4 of the paper)."""

    def __init__(self, pool_size=2, seed=None, epsilon=1e-12, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = _pair(pool_size)
        self.seed = seed
        self.epsilon = float(epsilon)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        self._check(input_shape)
        super().build(input_shape)

    def call(self, inputs, training=None):
        a = ops.relu(inputs)  # the probabilities need non-negative activations
        win = _windows(a, self.pool_size)  # (B, h, w, k, C)
        total = ops.sum(win, axis=3)
        if training:
            probs = win / (ops.expand_dims(total, 3) + self.epsilon)
            # Gumbel-max: argmax(log p + g) samples index i with probability p_i.
            gumbel = -ops.log(-ops.log(keras.random.uniform(ops.shape(win), minval=1e-20, maxval=1.0,
                                                            seed=self.seed_generator, dtype=win.dtype)))
            logits = ops.log(probs + self.epsilon) + gumbel
            pick = ops.one_hot(ops.argmax(logits, axis=3), win.shape[3], axis=3, dtype=win.dtype)
            return ops.sum(win * pick, axis=3)
        return ops.sum(win * win, axis=3) / (total + self.epsilon)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1] // self.pool_size[0], input_shape[2] // self.pool_size[1],
                input_shape[3])

    def get_config(self):
        config = super().get_config()
        config.update(pool_size=list(self.pool_size), seed=self.seed, epsilon=self.epsilon)
        return config


def pseudorandom_boundaries(n_in, n_out, u):
    """Pseudo-random region boundaries after Graham (2014), Sec. 2:
    a_i = ceil(α (i + u)) - 1 with α = n_in / n_out and u in (0, 1), clipped so
    that a_0 = 0, a_{n_out} = n_in and every region [a_i, a_{i+1}) is
    non-empty; for 1 < α < 2 the regions have sizes 1 and 2."""
    alpha = n_in / n_out
    b = [0] + [min(n_in - (n_out - i), max(i, math.ceil(alpha * (i + u)) - 1)) for i in range(1, n_out)] + [n_in]
    return [int(v) for v in b]


@keras.saving.register_keras_serializable(package="suite")
class FractionalMaxPooling2D(_Pool):
    """Fractional max pooling (Graham, "Fractional Max-Pooling", 2014):
    output size floor(N / ratio) with non-overlapping pseudo-random regions.

    Training draws new regions per batch (``tf.nn.fractional_max_pool``;
    keras.ops has no fractional pooling). Inference uses one fixed
    pseudo-random region sequence drawn from ``seed`` at build time, so a
    model's predictions are deterministic and export to plain slices + max.
    """

    def __init__(self, pooling_ratio=1.5, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.pooling_ratio = float(pooling_ratio)
        if self.pooling_ratio < 1.0:
            raise ValueError(f"FractionalMaxPooling2D expects pooling_ratio >= 1, got {pooling_ratio}")
        self.seed = int(seed)

    def build(self, input_shape):
        self._check(input_shape)
        r = np.random.default_rng(self.seed)
        self.out_h = max(1, int(input_shape[1] / self.pooling_ratio))
        self.out_w = max(1, int(input_shape[2] / self.pooling_ratio))
        self.rows = pseudorandom_boundaries(input_shape[1], self.out_h, r.uniform())
        self.cols = pseudorandom_boundaries(input_shape[2], self.out_w, r.uniform())
        super().build(input_shape)

    def call(self, inputs, training=None):
        if training:
            import tensorflow as tf  # training-time random regions: TF op, no keras.ops equivalent

            return tf.nn.fractional_max_pool(inputs, [1.0, self.pooling_ratio, self.pooling_ratio, 1.0],
                                             pseudo_random=True)[0]
        rows = [ops.max(inputs[:, a:b], axis=1) for a, b in zip(self.rows[:-1], self.rows[1:])]
        x = ops.stack(rows, axis=1)
        cols = [ops.max(x[:, :, a:b], axis=2) for a, b in zip(self.cols[:-1], self.cols[1:])]
        return ops.stack(cols, axis=2)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], max(1, int(input_shape[1] / self.pooling_ratio)),
                max(1, int(input_shape[2] / self.pooling_ratio)), input_shape[3])

    def get_config(self):
        config = super().get_config()
        config.update(pooling_ratio=self.pooling_ratio, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="suite")
class SpatialPyramidPooling2D(_Pool):
    """Spatial pyramid pooling (He et al., "Spatial Pyramid Pooling in Deep
    Convolutional Networks", 2014): for each level n, max (or average) pool
    into an n x n grid of bins [floor(iH/n), ceil((i+1)H/n)), flatten and
    concatenate: output (batch, C * Σ n²), independent of H and W.
    Bin order: level, then row, then column, then channel."""

    def __init__(self, bins=(1, 2, 4), mode="max", **kwargs):
        super().__init__(**kwargs)
        self.bins = [int(b) for b in bins]
        if mode not in ("max", "avg"):
            raise ValueError(f"SpatialPyramidPooling2D expects mode 'max' or 'avg', got {mode!r}")
        self.mode = mode

    def build(self, input_shape):
        self._check(input_shape)
        if min(input_shape[1], input_shape[2]) < max(self.bins):
            raise ValueError(f"SpatialPyramidPooling2D expects height and width >= {max(self.bins)} "
                             f"(the finest level), got shape {tuple(input_shape)}")
        super().build(input_shape)

    def call(self, inputs):
        h, w = inputs.shape[1], inputs.shape[2]
        reduce = ops.max if self.mode == "max" else ops.mean
        outs = []
        for n in self.bins:
            for i in range(n):
                r0, r1 = (i * h) // n, -(-((i + 1) * h) // n)
                for j in range(n):
                    c0, c1 = (j * w) // n, -(-((j + 1) * w) // n)
                    outs.append(reduce(inputs[:, r0:r1, c0:c1, :], axis=(1, 2)))
        return ops.concatenate(outs, axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[3] * sum(n * n for n in self.bins))

    def get_config(self):
        config = super().get_config()
        config.update(bins=list(self.bins), mode=self.mode)
        return config


@keras.saving.register_keras_serializable(package="suite")
class MaxPoolingWithArgmax2D(_Pool):
    """Max pooling that also returns where each maximum came from, as SegNet
    (Badrinarayanan et al. 2017) stores for its decoder. Non-overlapping
    windows (pool_size == strides), 'valid'. Returns [pooled, indices];
    indices are flat positions (row * W + col) * C + channel within each
    example (the layout of ``tf.nn.max_pool_with_argmax`` with
    include_batch_in_index=False). Computed with reshape + argmax so it
    exports to TFLite builtins (MaxPoolWithArgmax is not one)."""

    def __init__(self, pool_size=2, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = _pair(pool_size)

    def build(self, input_shape):
        self._check(input_shape)
        super().build(input_shape)

    def call(self, inputs):
        kh, kw = self.pool_size
        _, h, w, c = inputs.shape
        win = _windows(inputs, self.pool_size)            # (B, oh, ow, kh*kw, C)
        pooled = ops.max(win, axis=3)
        local = _first_argmax(win, pooled)                # index inside the window
        oh, ow = h // kh, w // kw
        row = ops.arange(oh, dtype="int32")[:, None, None] * kh + local // kw
        col = ops.arange(ow, dtype="int32")[None, :, None] * kw + local % kw
        chan = ops.arange(c, dtype="int32")[None, None, :]
        return [pooled, (row * w + col) * c + chan]

    def compute_output_shape(self, input_shape):
        shape = (input_shape[0], input_shape[1] // self.pool_size[0], input_shape[2] // self.pool_size[1],
                 input_shape[3])
        return [shape, shape]

    def compute_output_spec(self, inputs):
        shape = self.compute_output_shape(inputs.shape)[0]
        return [keras.KerasTensor(shape, inputs.dtype), keras.KerasTensor(shape, "int32")]

    def get_config(self):
        config = super().get_config()
        config.update(pool_size=list(self.pool_size))
        return config


@keras.saving.register_keras_serializable(package="suite")
class MaxUnpooling2D(_Pool):
    """SegNet's unpooling (Badrinarayanan et al. 2017, Fig. 3): puts each
    pooled value back at the position its index records; every other
    position is zero. Inputs [pooled, indices] from ``MaxPoolingWithArgmax2D``
    with the same ``pool_size``; output (B, h*kh, w*kw, C).
    Written as upsample + equality mask (no scatter), which TFLite holds."""

    def __init__(self, pool_size=2, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = _pair(pool_size)

    def build(self, input_shape):
        if not (isinstance(input_shape, (list, tuple)) and len(input_shape) == 2
                and isinstance(input_shape[0], (list, tuple))):
            raise ValueError(f"MaxUnpooling2D expects two inputs [pooled, indices], each {_NHWC}, got {input_shape}")
        for s in input_shape:
            self._check(s)
        if tuple(input_shape[0][1:]) != tuple(input_shape[1][1:]):
            raise ValueError(f"MaxUnpooling2D expects pooled and indices of the same shape, "
                             f"got {tuple(input_shape[0])} and {tuple(input_shape[1])}")
        super().build(input_shape)

    def call(self, inputs):
        pooled, indices = inputs
        kh, kw = self.pool_size
        _, h, w, c = pooled.shape
        H, W = h * kh, w * kw
        up = ops.repeat(ops.repeat(pooled, kh, axis=1), kw, axis=2)
        up_idx = ops.repeat(ops.repeat(ops.cast(indices, "int32"), kh, axis=1), kw, axis=2)
        position = (ops.arange(H, dtype="int32")[:, None, None] * W
                    + ops.arange(W, dtype="int32")[None, :, None]) * c + ops.arange(c, dtype="int32")
        return ops.where(ops.equal(up_idx, position[None]), up, ops.zeros_like(up))

    def compute_output_shape(self, input_shape):
        s = input_shape[0]
        return (s[0], s[1] * self.pool_size[0], s[2] * self.pool_size[1], s[3])

    def get_config(self):
        config = super().get_config()
        config.update(pool_size=list(self.pool_size))
        return config


def _roi_inputs(layer, input_shape):
    if not (isinstance(input_shape, (list, tuple)) and len(input_shape) == 2
            and isinstance(input_shape[0], (list, tuple))):
        raise ValueError(f"{type(layer).__name__} expects two inputs [features {_NHWC}, rois (batch, num_rois, 4)], "
                         f"got {input_shape}")
    f_shape, r_shape = tuple(input_shape[0]), tuple(input_shape[1])
    check_rank(layer, f_shape, 4, "feature map " + _NHWC)
    check_known(layer, f_shape, (1, 2, 3), "a feature map " + _NHWC)
    if len(r_shape) != 3 or r_shape[-1] != 4:
        raise ValueError(f"{type(layer).__name__} expects rois of shape (batch, num_rois, 4) as (y1, x1, y2, x2), "
                         f"got shape {r_shape}")
    return f_shape, r_shape


class _RoI(layers.Layer):
    def __init__(self, pooled_size=(2, 2), spatial_scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.pooled_size = _pair(pooled_size)
        self.spatial_scale = float(spatial_scale)

    def build(self, input_shape):
        _roi_inputs(self, input_shape)
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        f, r = input_shape
        return (f[0], r[1], self.pooled_size[0], self.pooled_size[1], f[3])

    def get_config(self):
        config = super().get_config()
        config.update(pooled_size=list(self.pooled_size), spatial_scale=self.spatial_scale)
        return config


@keras.saving.register_keras_serializable(package="suite")
class RoIPooling(_RoI):
    """RoI max pooling of Fast R-CNN (Girshick 2015, Sec. 2.1), with the
    reference (Caffe) quantization: box corners (y1, x1, y2, x2) in input
    pixels are scaled by ``spatial_scale`` and rounded; the box (inclusive,
    at least 1x1) is split into ph x pw bins [floor(i·h/ph), ceil((i+1)·h/ph));
    each bin is max-pooled; empty bins give 0.
    Inputs [features (B, H, W, C), rois (B, N, 4)]; output (B, N, ph, pw, C).
    Max is separable, so rows are pooled before columns (5-D tensors at most).
    """

    def call(self, inputs):
        features, rois = inputs
        H, W = features.shape[1], features.shape[2]
        dtype = features.dtype
        box = ops.round(ops.cast(rois, dtype) * self.spatial_scale)
        y1, x1, y2, x2 = (box[..., i] for i in range(4))
        bin_h = ops.maximum(y2 - y1 + 1.0, 1.0) / self.pooled_size[0]
        bin_w = ops.maximum(x2 - x1 + 1.0, 1.0) / self.pooled_size[1]
        hh = ops.cast(ops.arange(H), dtype)
        ww = ops.cast(ops.arange(W), dtype)
        neg = ops.cast(-3.0e38, dtype)

        def span(start, size, i, limit):
            lo = ops.clip(ops.floor(i * size) + start, 0.0, limit)
            hi = ops.clip(ops.ceil((i + 1) * size) + start, 0.0, limit)
            return lo, hi

        by_row = []
        for i in range(self.pooled_size[0]):
            lo, hi = span(y1, bin_h, i, float(H))
            mask = (hh >= lo[..., None]) & (hh < hi[..., None])            # (B, N, H)
            m = ops.where(mask[:, :, :, None, None], features[:, None], neg)  # (B, N, H, W, C)
            by_row.append((ops.max(m, axis=2), hi > lo))                      # (B, N, W, C)
        out = []
        for rows, row_ok in by_row:
            cells = []
            for j in range(self.pooled_size[1]):
                lo, hi = span(x1, bin_w, j, float(W))
                mask = (ww >= lo[..., None]) & (ww < hi[..., None])        # (B, N, W)
                v = ops.max(ops.where(mask[..., None], rows, neg), axis=2)  # (B, N, C)
                ok = (row_ok & (hi > lo))[..., None]
                cells.append(ops.where(ok, v, ops.zeros_like(v)))
            out.append(ops.stack(cells, axis=2))
        return ops.stack(out, axis=2)


@keras.saving.register_keras_serializable(package="suite")
class RoIAlign(_RoI):
    """RoIAlign of Mask R-CNN (He et al. 2017, Sec. 3): no quantization; each
    of the ph x pw bins averages ``sampling_ratio``² bilinearly interpolated
    samples at regularly spaced points. Coordinates follow the "aligned"
    convention (pixel centres at integer + 0.5, so a sample at continuous y
    reads between rows floor(y-0.5) and ceil(y-0.5)), clamped to the map.

    Bilinear interpolation is a triangle kernel, so each bin is a weighted
    sum Σ_h Σ_w a_h b_w f[h, w]; the weights (averaged over the samples) are
    built densely and applied with two matmuls -- no gather, TFLite-friendly.
    """

    def __init__(self, pooled_size=(2, 2), spatial_scale=1.0, sampling_ratio=2, **kwargs):
        super().__init__(pooled_size, spatial_scale, **kwargs)
        self.sampling_ratio = int(sampling_ratio)

    def _weights(self, start, end, bins, size, dtype):
        sr = self.sampling_ratio
        step = (end - start) / bins                                          # (B, N)
        k = ops.cast(ops.arange(bins * sr), dtype)
        pos = start[..., None] + (k // sr) * step[..., None] + ((k % sr) + 0.5) * step[..., None] / sr
        pos = ops.clip(pos - 0.5, 0.0, float(size - 1))                      # (B, N, bins*sr)
        grid = ops.cast(ops.arange(size), dtype)
        w = ops.relu(1.0 - ops.abs(pos[..., None] - grid))                   # (B, N, bins*sr, size)
        w = ops.reshape(w, (-1, ops.shape(w)[1], bins, sr, size))
        return ops.mean(w, axis=3)                                           # (B, N, bins, size)

    def call(self, inputs):
        features, rois = inputs
        dtype = features.dtype
        box = ops.cast(rois, dtype) * self.spatial_scale
        wy = self._weights(box[..., 0], box[..., 2], self.pooled_size[0], features.shape[1], dtype)
        wx = self._weights(box[..., 1], box[..., 3], self.pooled_size[1], features.shape[2], dtype)
        rows = ops.einsum("bnph,bhwc->bnpwc", wy, features)
        return ops.einsum("bnqw,bnpwc->bnpqc", wx, rows)

    def get_config(self):
        config = super().get_config()
        config.update(sampling_ratio=self.sampling_ratio)
        return config
