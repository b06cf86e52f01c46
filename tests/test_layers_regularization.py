"""DropConnect and StochasticDepth: inference formulas, training statistics,
gradients, round trips, TFLite (inference graph)."""

import numpy as np
import pytest
from layer_checks import (
    Case,
    case_forward,
    case_gradient,
    case_roundtrip,
    case_shape_error,
    case_tflite,
    np_relu,
    rand,
    to_numpy,
)

from layers import DropConnect, StochasticDepth


def dropconnect_ref(l, xs):
    return np_relu((1 - l.rate) * xs[0] @ np.asarray(l.kernel) + np.asarray(l.bias))


def sd_ref(l, xs):
    return xs[0] + l.survival_probability * xs[1]


X = rand(3, 5, seed=51)
A, B = rand(2, 3, 3, 2, seed=52), rand(2, 3, 3, 2, seed=53)
CASES = [
    Case("dropconnect", lambda d: DropConnect(4, rate=0.3, activation="relu", dtype=d), X, dropconnect_ref,
         bad=(rand(2, 3, 4), r"DropConnect expects a 2-D input \(batch, features\), got shape \(2, 3, 4\)")),
    Case("stochastic_depth", lambda d: StochasticDepth(0.7, dtype=d), [A, B], sd_ref, grad=(0, 1),
         bad=([A, rand(2, 3, 3, 3)], "StochasticDepth expects shortcut and residual of the same shape")),
]


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_regularization_forward(case):
    case_forward(case)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_regularization_gradient(case):
    case_gradient(case)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_regularization_roundtrip(case, tmp_path):
    case_roundtrip(case, tmp_path)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_regularization_tflite(case, tmp_path):
    # Exports the inference graph; the training-time Bernoulli masks are not part of a served model.
    case_tflite(case, tmp_path)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_regularization_shape_error(case):
    case_shape_error(case)


def test_dropconnect_training_masks_weights_per_example():
    layer = DropConnect(50, rate=0.3, seed=1)
    x = np.ones((64, 40), np.float32)
    layer.build(x.shape)
    layer.set_weights([np.ones((40, 50), np.float32), np.zeros(50, np.float32)])
    y = to_numpy(layer(x, training=True))
    # Each output counts the kept connections: Binomial(40, 0.7).
    assert np.allclose(y, np.round(y)) and abs(y.mean() - 28.0) < 0.5
    assert len(np.unique(y[:, 0])) > 1  # masks differ between examples
    np.testing.assert_allclose(to_numpy(layer(x, training=False)), 28.0, rtol=1e-6)


def test_stochastic_depth_training_drops_whole_branch():
    layer = StochasticDepth(0.7, seed=3)
    a, b = np.zeros((2000, 2, 2, 1), np.float32), np.ones((2000, 2, 2, 1), np.float32)
    y = to_numpy(layer([a, b], training=True))
    per_example = y.reshape(2000, -1)
    assert set(np.unique(per_example)) == {0.0, 1.0}
    assert (per_example.min(1) == per_example.max(1)).all()  # the branch is kept or dropped as a whole
    assert abs(per_example[:, 0].mean() - 0.7) < 0.04


def test_rates_validated():
    with pytest.raises(ValueError, match="DropConnect expects 0 <= rate < 1"):
        DropConnect(3, rate=1.0)
    with pytest.raises(ValueError, match="StochasticDepth expects 0 < survival_probability <= 1"):
        StochasticDepth(0.0)
