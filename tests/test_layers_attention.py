"""Attention layers: NumPy references from Bahdanau et al. / Vaswani et al.,
parity with keras.layers.MultiHeadAttention, gradients, round trips, TFLite."""

import keras
import numpy as np
import pytest
from layer_checks import (
    Case,
    assert_close,
    case_forward,
    case_gradient,
    case_roundtrip,
    case_shape_error,
    case_tflite,
    np_relu,
    np_softmax,
    rand,
    randomize_weights,
    to_numpy,
)

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


# ------------------------------------------------------------ padding masks
LENGTHS = [3, 5]  # real keys per batch row; row 0 is padded from position 3 on
KEY_MASK = np.arange(5)[None, :] < np.array(LENGTHS)[:, None]  # (2, 5) True at real keys


def test_additive_attention_masked_keys_get_zero_weight():
    layer = AdditiveAttention(4, return_attention=True)
    _, weights = layer([Q, V], key_mask=KEY_MASK)
    weights = to_numpy(weights)
    assert (weights[0, :, 3:] == 0).all()  # exactly zero, not just small
    assert (weights[0, :, :3] > 0).all() and (weights[1] > 0).all()
    assert_close(weights.sum(-1), np.ones((2, 3)), atol=1e-6)
    unmasked = to_numpy(layer([Q, V])[1])
    assert np.abs(unmasked[1] - weights[1]).max() < 1e-7  # a row without padding is unchanged


@pytest.mark.parametrize("causal", [False, True])
def test_mhsa_masked_keys_get_zero_weight(causal):
    layer = MultiHeadSelfAttention(2, 3, causal=causal)
    _, weights = layer(S, key_mask=KEY_MASK, return_attention_scores=True)
    weights = to_numpy(weights)  # (batch, heads, query, key)
    assert (weights[0, :, :, 3:] == 0).all()
    assert_close(weights.sum(-1), np.ones((2, 2, 5)), atol=1e-6)


def _padded_equals_unpadded(layer_call, padded_inputs, unpadded_inputs, positions, atol=1e-5):
    got = to_numpy(layer_call(padded_inputs, True))[0, :positions]
    want = to_numpy(layer_call(unpadded_inputs, False))[0]
    assert_close(got, want, atol=atol)


@pytest.mark.parametrize("name", ["additive", "mhsa", "mhsa_causal", "encoder", "decoder"])
def test_padded_batch_equals_unpadded_sequence_at_real_positions(name):
    """Row 0 padded with junk from position 3 on (values, keys or memory) gives the
    outputs of the same row cut to its 3 real positions."""
    junk = S.copy()
    junk[0, 3:] = 50.0  # large junk: any weight on it would show
    mask = KEY_MASK
    if name == "additive":
        layer = AdditiveAttention(4)
        call = lambda xs, padded: layer(xs, key_mask=mask if padded else None)
        _padded_equals_unpadded(call, [Q, junk], [Q[:1], junk[:1, :3]], 3)
    elif name.startswith("mhsa"):
        layer = MultiHeadSelfAttention(2, 3, causal=name.endswith("causal"))
        call = lambda x, padded: layer(x, key_mask=mask if padded else None)
        _padded_equals_unpadded(call, junk, junk[:1, :3], 3)
    elif name == "encoder":
        layer = TransformerEncoder(2, 3, 7)
        call = lambda x, padded: layer(x, key_mask=mask if padded else None)
        _padded_equals_unpadded(call, junk, junk[:1, :3], 3)
    else:
        layer = TransformerDecoder(2, 3, 7)
        call = lambda xs, padded: layer(xs, memory_mask=mask if padded else None)
        _padded_equals_unpadded(call, [Q, junk], [Q[:1], junk[:1, :3]], 3)


@pytest.mark.parametrize("cross,causal", [(False, False), (False, True), (True, False)])
def test_mhsa_key_mask_matches_keras_attention_mask(cross, causal):
    query, value = (Q, S) if cross else (S, S)
    ours = MultiHeadSelfAttention(2, 3, causal=causal)
    ours([query, value])
    randomize_weights(ours, seed=38)
    ref = keras.layers.MultiHeadAttention(num_heads=2, key_dim=3)
    ref(query, value)
    ref.set_weights(ours.get_weights())
    attention_mask = np.broadcast_to(KEY_MASK[:, None, :], (2, query.shape[1], 5))
    got, got_scores = ours([query, value], key_mask=KEY_MASK, return_attention_scores=True)
    want, want_scores = ref(query, value, attention_mask=attention_mask, use_causal_mask=causal,
                            return_attention_scores=True)
    assert_close(to_numpy(got), to_numpy(want), atol=1e-5)
    assert_close(to_numpy(got_scores), to_numpy(want_scores), atol=1e-6)


def _token_ids():
    ids = np.array([[4, 7, 2, 0, 0], [3, 9, 5, 8, 1]], np.int32)  # 0 = padding
    return ids, ids != 0


def test_keras_mask_propagation_reaches_the_attention_layers():
    """Embedding(mask_zero=True) -> encoder -> decoder over it: the same as explicit masks,
    and the padded row equals its unpadded self."""
    ids, mask = _token_ids()
    embed = keras.layers.Embedding(10, 6, mask_zero=True)
    encoder, decoder = TransformerEncoder(2, 3, 7), TransformerDecoder(2, 3, 7)
    query = rand(2, 4, 6, seed=39)
    source = keras.Input((5,), dtype="int32")
    target = keras.Input((4, 6))
    model = keras.Model([source, target], decoder([target, encoder(embed(source))]))
    got = to_numpy(model([ids, query]))
    x = embed(ids)
    explicit = decoder([query, encoder(x, key_mask=mask)], memory_mask=mask)
    assert_close(got, to_numpy(explicit), atol=1e-6)
    alone = decoder([query[:1], encoder(x[:1, :3])])
    assert_close(got[:1], to_numpy(alone), atol=1e-5)
    # AdditiveAttention reads the values' Keras mask too
    attention = AdditiveAttention(4, return_attention=True)
    values = keras.Input((5,), dtype="int32")
    q_in = keras.Input((3, 6))
    weights_model = keras.Model([q_in, values], attention([q_in, embed(values)])[1])
    weights = to_numpy(weights_model([rand(2, 3, 6, seed=40), ids]))
    assert (weights[0, :, 3:] == 0).all()
    assert_close(weights.sum(-1), np.ones((2, 3)), atol=1e-6)


def test_explicit_key_mask_input_survives_save_and_load(tmp_path):
    x_in = keras.Input((None, 4))
    mask_in = keras.Input((None,), dtype="bool")
    outputs = TransformerEncoder(2, 3, 7)(x_in, key_mask=mask_in)
    model = keras.Model([x_in, mask_in], outputs)
    path = str(tmp_path / "masked.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    junk = S.copy()
    junk[0, 3:] = 50.0
    assert_close(to_numpy(loaded([junk, KEY_MASK])), to_numpy(model([junk, KEY_MASK])), atol=1e-6)
    assert_close(to_numpy(loaded([junk, KEY_MASK]))[0, :3], to_numpy(model([junk[:1, :3], KEY_MASK[:1, :3]]))[0],
                 atol=1e-5)
