"""Reparameterization, MinibatchDiscrimination, VirtualBatchNormalization."""

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

from layers import MinibatchDiscrimination, Reparameterization, VirtualBatchNormalization

MU, LOGVAR = rand(2, 3, seed=61), rand(2, 3, seed=62)
EPS = rand(2, 3, seed=63)  # fixed ε makes the sample a deterministic function to check
X = rand(4, 5, seed=64)
REF = rand(6, 3, 3, 2, seed=65, low=-2.0, high=1.5)
XV = rand(2, 3, 3, 2, seed=66)


def reparam_ref(l, xs):
    return xs[0] + np.exp(0.5 * xs[1]) * EPS


def mbd_ref(l, xs):
    x = xs[0]
    m = np.einsum("nf,fbc->nbc", x, np.asarray(l.T))
    c = np.exp(-np.abs(m[:, None] - m[None]).sum(-1))  # (N, N, B)
    o = np.array([[sum(c[i, j, b] for j in range(len(x)) if j != i) for b in range(m.shape[1])]
                  for i in range(len(x))])
    return np.concatenate([x, o], -1)


def vbn_ref(l, xs):
    x = xs[0]
    r = REF.astype(np.float64)
    out = np.zeros_like(x)
    for i in range(len(x)):
        both = np.concatenate([r, x[i:i + 1]], 0)  # reference batch plus this example
        mu, var = both.mean((0, 1, 2)), both.var((0, 1, 2))
        out[i] = np.asarray(l.gamma) * (x[i] - mu) / np.sqrt(var + l.epsilon) + np.asarray(l.beta)
    return out


def make_vbn(d):
    layer = VirtualBatchNormalization(dtype=d)
    layer.set_reference(REF.astype(d))
    return layer


CASES = [
    Case("reparameterization", lambda d: Reparameterization(seed=1, dtype=d), [MU, LOGVAR], reparam_ref, grad=(0, 1),
         call_kwargs={"epsilon": EPS},
         bad=([MU, rand(2, 4)], "Reparameterization expects mean and log_variance of the same shape")),
    Case("minibatch_discrimination", lambda d: MinibatchDiscrimination(3, 2, dtype=d), X, mbd_ref,
         bad=(rand(2, 3, 4), r"MinibatchDiscrimination expects a 2-D input \(batch, features\)")),
    Case("virtual_batch_norm", make_vbn, XV, vbn_ref,
         bad=(rand(4), r"VirtualBatchNormalization expects an input of shape \(batch, \.\.\., features\)")),
]


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_generative_forward(case):
    case_forward(case)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_generative_gradient(case):
    case_gradient(case)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_generative_roundtrip(case, tmp_path):
    case_roundtrip(case, tmp_path)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_generative_tflite(case, tmp_path):
    case_tflite(case, tmp_path)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_generative_shape_error(case):
    case_shape_error(case)


def test_reparameterization_sampling_statistics():
    mu = np.full((20000, 2), [1.0, -2.0], np.float32)
    logvar = np.full((20000, 2), [np.log(4.0), np.log(0.25)], np.float32)
    z = to_numpy(Reparameterization(seed=5)([mu, logvar]))
    np.testing.assert_allclose(z.mean(0), [1.0, -2.0], atol=0.05)
    np.testing.assert_allclose(z.std(0), [2.0, 0.5], atol=0.05)
    np.testing.assert_array_equal(to_numpy(Reparameterization(sample=False)([mu[:2], logvar[:2]])), mu[:2])


def test_vbn_output_independent_of_other_examples():
    layer = make_vbn("float32")
    y_batch = to_numpy(layer(XV))
    y_single = to_numpy(layer(XV[:1]))
    np.testing.assert_allclose(y_batch[:1], y_single, atol=1e-6)
