"""Maxout, Perceptron, GramMatrix, GuidedReLU."""

import numpy as np
import pytest
import tensorflow as tf
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

from layers import GramMatrix, GuidedReLU, Maxout, Perceptron


def maxout_ref(l, xs):
    k, b = np.asarray(l.kernel), np.asarray(l.bias)
    return np.max(np.einsum("bf,fuk->buk", xs[0], k) + b, axis=-1)


def perceptron_ref(l, xs):
    z = xs[0] @ np.asarray(l.kernel) + np.asarray(l.bias)
    return np.where(z >= 0, 1.0, -1.0)


def gram_ref(l, xs):
    x = xs[0]
    f = x.reshape(x.shape[0], -1, x.shape[-1])  # F: (positions, channels)
    return np.einsum("bki,bkj->bij", f, f) / f.shape[1]


X2 = rand(3, 5, seed=71)
X4 = rand(2, 3, 4, 3, seed=72)
ERR2 = r"expects a 2-D input \(batch, features\), got shape \(2, 3, 4\)"
CASES = [
    Case("maxout", lambda d: Maxout(3, pieces=4, dtype=d), X2, maxout_ref, bad=(rand(2, 3, 4), "Maxout " + ERR2)),
    Case("perceptron", lambda d: Perceptron(2, dtype=d), X2, perceptron_ref, grad=(),
         grad_reason="sign() has zero derivative almost everywhere; trained by the perceptron rule",
         bad=(rand(2, 3, 4), "Perceptron " + ERR2)),
    Case("gram_matrix", lambda d: GramMatrix(dtype=d), X4, gram_ref,
         bad=(X2, r"GramMatrix expects a 4-D input \(batch, height, width, channels\), got shape \(3, 5\)")),
    Case("guided_relu", lambda d: GuidedReLU(dtype=d), X4, lambda l, xs: np.maximum(xs[0], 0), grad=(),
         grad_reason="the guided gradient deliberately differs from d relu/dx; "
                     "checked against its definition in test_guided_relu_gradient_rule",
         bad=None),
]


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_misc_forward(case):
    case_forward(case)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_misc_gradient(case):
    case_gradient(case)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_misc_roundtrip(case, tmp_path):
    case_roundtrip(case, tmp_path)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_misc_tflite(case, tmp_path):
    case_tflite(case, tmp_path)


@pytest.mark.parametrize("case", [c for c in CASES if c.bad], ids=repr)
def test_misc_shape_error(case):
    case_shape_error(case)


def test_guided_relu_gradient_rule():
    x = tf.constant(rand(4, 6, seed=73, low=-1, high=1).astype(np.float64))
    upstream = tf.constant(rand(4, 6, seed=74, low=-1, high=1).astype(np.float64))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = GuidedReLU(dtype="float64")(x)
    g = tape.gradient(y, x, output_gradients=upstream).numpy()
    expected = upstream.numpy() * (x.numpy() > 0) * (upstream.numpy() > 0)
    np.testing.assert_allclose(g, expected)
    assert (g > 0).any() and (expected != upstream.numpy()).any()


def test_guided_relu_accepts_any_rank():
    # Elementwise: no shape constraint to violate, so no shape error exists.
    assert GuidedReLU()(rand(2, 3, seed=75)).shape == (2, 3)


def test_perceptron_rule_learns_separable_data():
    r = np.random.default_rng(0)
    x = r.normal(size=(200, 2)).astype(np.float32)
    y = np.where(x @ np.array([2.0, -1.0]) + 0.3 >= 0, 1.0, -1.0).astype(np.float32)[:, None]
    layer = Perceptron(1)
    layer.build(x.shape)
    errors = [layer.perceptron_update(x, y, 0.1) for _ in range(100)]
    assert errors[-1] == 0 and (to_numpy(layer(x)) == y).all()
