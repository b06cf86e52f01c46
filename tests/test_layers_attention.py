"""Attention layers: NumPy references from Bahdanau et al. / Vaswani et al.,
parity with keras.layers.MultiHeadAttention, gradients, round trips, TFLite."""

import keras
import numpy as np
import pytest

from layer_checks import (Case, assert_close, case_forward, case_gradient, case_roundtrip, case_shape_error,
                          case_tflite, np_relu, np_softmax, rand, randomize_weights, to_numpy)
from layers import AdditiveAttention, MultiHeadSelfAttention, PositionalEncoding, TransformerDecoder, TransformerEncoder


def w(v):
    return np.asarray(v, np.float64)


def additive_ref(l, xs):
    q, v = xs
    e = np.tanh((q @ w(l.w_query))[:, :, None] + (v @ w(l.w_values))[:, None] + w(l.bias)) @ w(l.v)
    return np_softmax(e, -1) @ v


def mha_ref(l, xs):
    q_in, v_in = (xs[0], xs[0]) if len(xs) == 1 else xs
    Q = np.einsum("btd,dhk->bhtk", q_in, w(l.query_kernel)) + w(l.query_bias)[:, None]
    K = np.einsum("btd,dhk->bhtk", v_in, w(l.key_kernel)) + w(l.key_bias)[:, None]
    V = np.einsum("btd,dhk->bhtk", v_in, w(l.value_kernel)) + w(l.value_bias)[:, None]
    s = Q @ K.transpose(0, 1, 3, 2) / np.sqrt(l.key_dim)
    if l.causal:
        s = np.where(np.tril(np.ones(s.shape[-2:], bool)), s, -np.inf)
    heads = np_softmax(s, -1) @ V
    return np.einsum("bhtk,hkd->btd", heads, w(l.output_kernel)) + w(l.output_bias)


def pe_ref(l, xs):
    x = xs[0]
    t, d = x.shape[1:]
    pe = np.zeros((t, d))
    for pos in range(t):
        for i in range(0, d, 2):
            pe[pos, i] = np.sin(pos / 10000 ** (i / d))
            if i + 1 < d:
                pe[pos, i + 1] = np.cos(pos / 10000 ** (i / d))
    return x + pe


def ln_ref(n, x):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + n.epsilon) * w(n.gamma) + w(n.beta)


def ffn_ref(l, x):
    return np_relu(x @ w(l.ff1.kernel) + w(l.ff1.bias)) @ w(l.ff2.kernel) + w(l.ff2.bias)


def encoder_ref(l, xs):
    x = ln_ref(l.norms[0], xs[0] + mha_ref(l.attentions[0], [xs[0]]))
    return ln_ref(l.norms[1], x + ffn_ref(l, x))


def decoder_ref(l, xs):
    t, m = xs
    x = ln_ref(l.norms[0], t + mha_ref(l.attentions[0], [t]))
    x = ln_ref(l.norms[1], x + mha_ref(l.attentions[1], [x, m]))
    return ln_ref(l.norms[2], x + ffn_ref(l, x))


Q = rand(2, 3, 4, seed=31)
V = rand(2, 5, 6, seed=32)
S = rand(2, 5, 4, seed=33)
BAD3 = r"expects a 3-D input .*\(batch, time, features\), got shape \(2, 4\)"
CASES = [
    Case("additive", lambda d: AdditiveAttention(5, dtype=d), [Q, V], additive_ref, grad=(0, 1),
         bad=([rand(2, 4), V], "AdditiveAttention " + BAD3)),
    Case("mhsa_self", lambda d: MultiHeadSelfAttention(2, 3, dtype=d), S, mha_ref,
         bad=(rand(2, 4), "MultiHeadSelfAttention " + BAD3)),
    Case("mhsa_causal", lambda d: MultiHeadSelfAttention(2, 3, causal=True, dtype=d), S, mha_ref,
         bad=(rand(2, 4), "MultiHeadSelfAttention " + BAD3)),
    Case("mha_cross", lambda d: MultiHeadSelfAttention(2, 3, dtype=d), [Q, V], mha_ref, grad=(0, 1),
         bad=([rand(2, 4), V], "MultiHeadSelfAttention " + BAD3)),
    Case("positional_encoding", lambda d: PositionalEncoding(dtype=d), rand(2, 6, 5, seed=34), pe_ref,
         bad=(rand(2, 4), "PositionalEncoding " + BAD3)),
    Case("transformer_encoder", lambda d: TransformerEncoder(2, 3, 7, dtype=d), S, encoder_ref,
         bad=(rand(2, 4), "TransformerEncoder " + BAD3), grad_inputs=[S[:1, :3]]),
    Case("transformer_decoder", lambda d: TransformerDecoder(2, 3, 7, dtype=d), [Q, S], decoder_ref, grad=(0, 1),
         bad=([rand(2, 4), S], "TransformerDecoder " + BAD3), grad_inputs=[Q[:1, :2], S[:1, :3]]),
]


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_attention_forward(case):
    case_forward(case)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_attention_gradient(case):
    case_gradient(case)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_attention_roundtrip(case, tmp_path):
    case_roundtrip(case, tmp_path)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_attention_tflite(case, tmp_path):
    case_tflite(case, tmp_path)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_attention_shape_error(case):
    case_shape_error(case)


@pytest.mark.parametrize("causal", [False, True])
def test_mhsa_matches_keras_multi_head_attention(causal):
    x = rand(2, 5, 4, seed=35)
    ours = MultiHeadSelfAttention(2, 3, causal=causal)
    ours(x)
    randomize_weights(ours, seed=36)
    ref = keras.layers.MultiHeadAttention(num_heads=2, key_dim=3)
    ref(x, x)
    ref.set_weights(ours.get_weights())
    got, got_scores = ours(x, return_attention_scores=True)
    want, want_scores = ref(x, x, use_causal_mask=causal, return_attention_scores=True)
    assert_close(to_numpy(got), to_numpy(want), atol=1e-5)
    assert_close(to_numpy(got_scores), to_numpy(want_scores), atol=1e-6)


def test_additive_attention_weights_sum_to_one():
    layer = AdditiveAttention(4, return_attention=True)
    context, weights = layer([Q, V])
    assert context.shape == (2, 3, 6) and weights.shape == (2, 3, 5)
    assert_close(to_numpy(weights).sum(-1), np.ones((2, 3)), atol=1e-6)
