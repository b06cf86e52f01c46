"""Pooling family: NumPy references from each paper's definition, gradients,
round trips, TFLite."""

import numpy as np
import pytest
from layer_checks import (
    Case,
    case_forward,
    case_gradient,
    case_roundtrip,
    case_shape_error,
    case_tflite,
    rand,
    to_numpy,
)

from layers import (
    FractionalMaxPooling2D,
    LpPooling2D,
    MaxPoolingWithArgmax2D,
    MaxUnpooling2D,
    RoIAlign,
    RoIPooling,
    SpatialPyramidPooling2D,
    StochasticPooling2D,
)


def lp_ref(l, xs):
    x = xs[0]
    (kh, kw), (sh, sw) = l.pool_size, l.strides
    oh, ow = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    out = np.zeros((x.shape[0], oh, ow, x.shape[3]))
    for i in range(oh):
        for j in range(ow):
            win = x[:, i * sh:i * sh + kh, j * sw:j * sw + kw]
            out[:, i, j] = (np.abs(win) ** l.p).sum(axis=(1, 2)) ** (1 / l.p)
    return out


def _blocks(x, k):
    n, h, w, c = x.shape
    oh, ow = h // k, w // k
    return x[:, :oh * k, :ow * k].reshape(n, oh, k, ow, k, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, oh, ow, k * k, c)


def stochastic_ref(l, xs):
    a = _blocks(np.maximum(xs[0], 0), l.pool_size[0])
    p = a / a.sum(3, keepdims=True)
    return (p * a).sum(3)   # Zeiler & Fergus Eq. 4: Σ p_i a_i


def fractional_ref(l, xs):
    x = xs[0]
    out = np.zeros((x.shape[0], len(l.rows) - 1, len(l.cols) - 1, x.shape[3]))
    for i in range(len(l.rows) - 1):
        for j in range(len(l.cols) - 1):
            out[:, i, j] = x[:, l.rows[i]:l.rows[i + 1], l.cols[j]:l.cols[j + 1]].max(axis=(1, 2))
    return out


def spp_ref(l, xs):
    x = xs[0]
    n, h, w, c = x.shape
    out = []
    for b in l.bins:
        for i in range(b):
            for j in range(b):
                win = x[:, int(np.floor(i * h / b)):int(np.ceil((i + 1) * h / b)),
                        int(np.floor(j * w / b)):int(np.ceil((j + 1) * w / b))]
                out.append(win.max(axis=(1, 2)) if l.mode == "max" else win.mean(axis=(1, 2)))
    return np.concatenate(out, -1)


def argmax_ref(l, xs):
    x = xs[0]
    n, h, w, c = x.shape
    k = l.pool_size[0]
    pooled = np.zeros((n, h // k, w // k, c))
    idx = np.zeros((n, h // k, w // k, c), np.int64)
    for b in range(n):
        for i in range(h // k):
            for j in range(w // k):
                for ch in range(c):
                    win = x[b, i * k:i * k + k, j * k:j * k + k, ch]
                    r, q = np.unravel_index(np.argmax(win), win.shape)
                    pooled[b, i, j, ch] = win[r, q]
                    idx[b, i, j, ch] = ((i * k + r) * w + j * k + q) * c + ch
    return [pooled, idx]


def unpool_ref(l, xs):
    pooled, idx = xs
    n, h, w, c = pooled.shape
    out = np.zeros((n, h * l.pool_size[0] * w * l.pool_size[1] * c))
    for b in range(n):
        out[b, idx[b].ravel()] = pooled[b].ravel()
    return out.reshape(n, h * l.pool_size[0], w * l.pool_size[1], c)


def roi_pool_ref(l, xs):
    f, rois = xs
    B, H, W, C = f.shape
    ph, pw = l.pooled_size
    out = np.zeros((B, rois.shape[1], ph, pw, C))
    for b in range(B):
        for r in range(rois.shape[1]):
            y1, x1, y2, x2 = np.round(rois[b, r] * l.spatial_scale)
            bh, bw = max(y2 - y1 + 1, 1) / ph, max(x2 - x1 + 1, 1) / pw
            for i in range(ph):
                hs, he = int(min(max(np.floor(i * bh) + y1, 0), H)), int(min(max(np.ceil((i + 1) * bh) + y1, 0), H))
                for j in range(pw):
                    ws, we = int(min(max(np.floor(j * bw) + x1, 0), W)), int(min(max(np.ceil((j + 1) * bw) + x1, 0), W))
                    if he > hs and we > ws:
                        out[b, r, i, j] = f[b, hs:he, ws:we].max(axis=(0, 1))
    return out


def bilinear(img, y, x):
    """Bilinear sample of img (H, W, C) at continuous pixel coords (centres at +0.5), clamped."""
    H, W, _ = img.shape
    y, x = min(max(y - 0.5, 0.0), H - 1.0), min(max(x - 0.5, 0.0), W - 1.0)
    y0, x0 = int(np.floor(y)), int(np.floor(x))
    y1, x1 = min(y0 + 1, H - 1), min(x0 + 1, W - 1)
    ly, lx = y - y0, x - x0
    return ((1 - ly) * (1 - lx) * img[y0, x0] + (1 - ly) * lx * img[y0, x1]
            + ly * (1 - lx) * img[y1, x0] + ly * lx * img[y1, x1])


def roi_align_ref(l, xs):
    f, rois = xs
    ph, pw = l.pooled_size
    sr = l.sampling_ratio
    out = np.zeros((f.shape[0], rois.shape[1], ph, pw, f.shape[3]))
    for b in range(f.shape[0]):
        for r in range(rois.shape[1]):
            y1, x1, y2, x2 = rois[b, r] * l.spatial_scale
            bh, bw = (y2 - y1) / ph, (x2 - x1) / pw
            for i in range(ph):
                for j in range(pw):
                    samples = [bilinear(f[b], y1 + i * bh + (iy + 0.5) * bh / sr, x1 + j * bw + (ix + 0.5) * bw / sr)
                               for iy in range(sr) for ix in range(sr)]
                    out[b, r, i, j] = np.mean(samples, axis=0)
    return out


X = rand(2, 6, 6, 3, seed=41)
XG = rand(1, 4, 4, 2, seed=42)
XP = rand(2, 6, 6, 3, seed=43, low=0.1, high=1.0)  # stochastic pooling works on non-negative activations
POOLED, INDICES = (to_numpy(t) for t in MaxPoolingWithArgmax2D()(X))
POOLED_G, INDICES_G = (to_numpy(t) for t in MaxPoolingWithArgmax2D()(XG))
ROIS = np.array([[[0.3, 0.6, 3.4, 4.2], [1.2, 2.0, 5.0, 5.4]],
                 [[2.1, 1.4, 4.6, 3.3], [0.0, 0.0, 5.6, 5.7]]], np.float32)
ROIS_G = np.array([[[0.3, 0.6, 3.1, 2.7]]], np.float32)
BAD = (rand(2, 5, seed=44), r"expects a 4-D input .*\(batch, height, width, channels\), got shape \(2, 5\)")
BAD_ROI = ([X, rand(2, 3, seed=45)], r"expects rois of shape \(batch, num_rois, 4\)")

CASES = [
    Case("lp_pooling", lambda d: LpPooling2D(3.0, 2, dtype=d), X, lp_ref, bad=BAD, grad_inputs=[XG]),
    Case("lp_pooling_overlap", lambda d: LpPooling2D(2.0, 3, strides=1, dtype=d), X, lp_ref, bad=BAD,
         grad_inputs=[XG]),
    Case("stochastic_pooling", lambda d: StochasticPooling2D(2, seed=1, dtype=d), XP, stochastic_ref, bad=BAD,
         grad_inputs=[XP[:1, :4, :4]]),
    Case("fractional_max_pooling", lambda d: FractionalMaxPooling2D(1.5, seed=3, dtype=d), X, fractional_ref, bad=BAD,
         grad_inputs=[XG]),
    Case("spp_max", lambda d: SpatialPyramidPooling2D((1, 2, 3), dtype=d), X, spp_ref, bad=BAD, grad_inputs=[XG]),
    Case("spp_avg", lambda d: SpatialPyramidPooling2D((1, 2), mode="avg", dtype=d), X, spp_ref, bad=BAD,
         grad_inputs=[XG]),
    Case("max_pooling_with_argmax", lambda d: MaxPoolingWithArgmax2D(2, dtype=d), X, argmax_ref, bad=BAD,
         grad_inputs=[XG], grad_output=0),
    Case("max_unpooling", lambda d: MaxUnpooling2D(2, dtype=d), [POOLED, INDICES], unpool_ref,
         bad=([rand(2, 5, seed=1), INDICES], BAD[1]), grad_inputs=[POOLED_G, INDICES_G]),
    Case("roi_pooling", lambda d: RoIPooling((2, 2), dtype=d), [X, ROIS], roi_pool_ref, bad=BAD_ROI,
         grad_inputs=[XG, ROIS_G]),
    Case("roi_pooling_scaled", lambda d: RoIPooling((3, 2), spatial_scale=0.5, dtype=d), [X, ROIS * 2], roi_pool_ref,
         bad=BAD_ROI, grad_inputs=[XG, ROIS_G * 2]),
    Case("roi_align", lambda d: RoIAlign((2, 2), sampling_ratio=2, dtype=d), [X, ROIS], roi_align_ref, grad=(0, 1),
         bad=BAD_ROI, grad_inputs=[XG, ROIS_G]),
]


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_pooling_forward(case):
    case_forward(case)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_pooling_gradient(case):
    case_gradient(case)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_pooling_roundtrip(case, tmp_path):
    case_roundtrip(case, tmp_path)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_pooling_tflite(case, tmp_path):
    case_tflite(case, tmp_path)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_pooling_shape_error(case):
    case_shape_error(case)


def test_stochastic_pooling_training_samples_by_activation():
    # One window [1, 2, 3, 4]: P(a_i) = a_i / 10, so the sample mean -> Σ a_i² / Σ a_i = 3.
    window = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    x = np.tile(window[None, :, :, None], (4000, 1, 1, 1))
    y = to_numpy(StochasticPooling2D(2, seed=7)(x, training=True)).ravel()
    assert set(np.unique(y)) <= {1.0, 2.0, 3.0, 4.0}
    freq = np.array([(y == v).mean() for v in (1, 2, 3, 4)])
    assert np.abs(freq - [0.1, 0.2, 0.3, 0.4]).max() < 0.03
    assert abs(y.mean() - 3.0) < 0.06


def test_fractional_pooling_regions_and_training():
    layer = FractionalMaxPooling2D(1.5, seed=0)
    x = rand(2, 9, 9, 2, seed=46)
    assert layer(x).shape == (2, 6, 6, 2)
    sizes = np.diff(layer.rows)
    assert layer.rows[0] == 0 and layer.rows[-1] == 9 and set(sizes) <= {1, 2}
    y = to_numpy(layer(x, training=True))  # random regions (tf.nn.fractional_max_pool)
    assert y.shape == (2, 6, 6, 2) and np.isin(y, x).all()


def test_unpool_inverts_argmax_pooling_on_maxima():
    pooled, idx = MaxPoolingWithArgmax2D(2)(X)
    up = to_numpy(MaxUnpooling2D(2)([pooled, idx]))
    assert (up != 0).sum() == pooled.shape[0] * np.prod(pooled.shape[1:])
    np.testing.assert_array_equal(up[up != 0], X[up != 0])


def test_roi_layers_validate_inputs():
    with pytest.raises(ValueError, match=r"RoIAlign expects two inputs \[features"):
        RoIAlign()(X)
    with pytest.raises(ValueError, match=r"SpatialPyramidPooling2D expects height and width >= 4"):
        SpatialPyramidPooling2D((1, 4))(rand(1, 3, 3, 1))
