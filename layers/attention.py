"""Attention layers: additive (Bahdanau), scaled dot-product multi-head,
sinusoidal positional encoding, Transformer encoder and decoder blocks.

Padding. Every attention layer takes an optional boolean key mask
(batch, keys), True at real keys: padded keys get a score of -1e9, so their
softmax weight is exactly zero and each row still sums to one. The mask comes
either from Keras' mask propagation (`Embedding(mask_zero=True)`, `Masking`:
the `mask` argument is filled in by Keras) or explicitly (`key_mask=`, or
`memory_mask=` for the decoder's cross-attention); an explicit mask wins.
The output carries the query's mask on to the next layers. Without a mask the
layers behave exactly as before.
"""

import math

import keras
from keras import layers, ops

from layers._checks import check_rank

_BTD = "(batch, time, features)"


def _masked(scores, allowed):
    """`scores` where `allowed`, else a large negative number (not -inf, which keeps softmax finite in
    float16, in TFLite and in rows whose keys are all masked): exp underflows to exactly 0."""
    # -1e9 overflows float16 (largest 65504) to -inf: there the dtype's own lowest finite number
    lowest = -65504.0 if keras.backend.standardize_dtype(scores.dtype) == "float16" else -1e9
    return ops.where(allowed, scores, ops.cast(lowest, scores.dtype))


def _split_mask(mask):
    """Keras' mask of [query, value] inputs (a list) or of a single self-attention input."""
    if isinstance(mask, (list, tuple)):
        return mask[0], mask[1]
    return mask, mask


def _key_mask(explicit, from_keras):
    mask = explicit if explicit is not None else from_keras
    return None if mask is None else ops.cast(mask, "bool")


def _pair(layer, inputs_shape):
    """Split a [query, value] input shape; a single shape means self-attention."""
    if isinstance(inputs_shape, (list, tuple)) and inputs_shape and isinstance(inputs_shape[0], (list, tuple)):
        if len(inputs_shape) != 2:
            raise ValueError(f"{type(layer).__name__} expects [query, value] inputs of shape {_BTD}, "
                             f"got {len(inputs_shape)} inputs")
        return tuple(inputs_shape[0]), tuple(inputs_shape[1])
    return tuple(inputs_shape), tuple(inputs_shape)


@keras.saving.register_keras_serializable(package="suite")
class AdditiveAttention(layers.Layer):
    """Additive attention of Bahdanau et al., "Neural Machine Translation by
    Jointly Learning to Align and Translate" (2015), Eq. 6 and A.1.2:
        e_ij = v^T tanh(W s_i + U h_j),  α_ij = softmax_j(e_ij),  c_i = Σ_j α_ij h_j.
    Inputs: [query s (batch, Tq, dq), values h (batch, Tv, dv)]; returns the
    context (batch, Tq, dv) (and the weights α with ``return_attention``).
    ``key_mask`` (batch, Tv), or the values' Keras mask: padded values get α = 0.
    """

    def __init__(self, units, return_attention=False, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.return_attention = bool(return_attention)
        self.supports_masking = True

    def build(self, input_shape):
        if not (isinstance(input_shape, (list, tuple)) and len(input_shape) == 2
                and isinstance(input_shape[0], (list, tuple))):
            raise ValueError(f"AdditiveAttention expects two inputs [query, values], each of shape {_BTD}, "
                             f"got {input_shape}")
        q_shape, v_shape = tuple(input_shape[0]), tuple(input_shape[1])
        check_rank(self, q_shape, 3, "query " + _BTD)
        check_rank(self, v_shape, 3, "values " + _BTD)
        self.w_query = self.add_weight(shape=(q_shape[-1], self.units), name="w_query")
        self.w_values = self.add_weight(shape=(v_shape[-1], self.units), name="w_values")
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros", name="bias")
        self.v = self.add_weight(shape=(self.units,), name="v")
        super().build(input_shape)

    def call(self, inputs, mask=None, key_mask=None):
        query, values = inputs
        q = ops.matmul(query, self.w_query)[:, :, None, :]     # (B, Tq, 1, U)
        k = ops.matmul(values, self.w_values)[:, None, :, :]   # (B, 1, Tv, U)
        scores = ops.sum(ops.tanh(q + k + self.bias) * self.v, axis=-1)  # (B, Tq, Tv)
        keys = _key_mask(key_mask, _split_mask(mask)[1])
        if keys is not None:
            scores = _masked(scores, keys[:, None, :])
        weights = ops.softmax(scores, axis=-1)
        context = ops.matmul(weights, values)
        return (context, weights) if self.return_attention else context

    def compute_mask(self, inputs, mask=None):
        query_mask = _split_mask(mask)[0]
        return [query_mask, None] if self.return_attention else query_mask

    def compute_output_shape(self, input_shape):
        q, v = input_shape
        ctx = (q[0], q[1], v[2])
        return (ctx, (q[0], q[1], v[1])) if self.return_attention else ctx

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, return_attention=self.return_attention)
        return config


@keras.saving.register_keras_serializable(package="suite")
class MultiHeadSelfAttention(layers.Layer):
    """Scaled dot-product multi-head attention (Vaswani et al., "Attention Is
    All You Need", 2017, Eq. 1 and Sec. 3.2.2):
        head_i = softmax(Q_i K_i^T / sqrt(d_k) + mask) V_i,  Q_i = X W^Q_i ...
        MultiHead = Concat(head_1..h) W^O.
    A single input is self-attention; [query, value] attends from query to
    value (cross-attention). ``causal=True`` masks future positions;
    ``key_mask`` (batch, Tv), or the value's Keras mask, masks padded keys.
    Weight layout and order match ``keras.layers.MultiHeadAttention`` so the
    two can share weights.
    """

    def __init__(self, num_heads, key_dim, output_dim=None, causal=False, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.key_dim = int(key_dim)
        self.output_dim = None if output_dim is None else int(output_dim)
        self.causal = bool(causal)
        self.supports_masking = True

    def build(self, input_shape):
        q_shape, v_shape = _pair(self, input_shape)
        check_rank(self, q_shape, 3, "query " + _BTD)
        check_rank(self, v_shape, 3, "value " + _BTD)
        h, k = self.num_heads, self.key_dim
        out = self.output_dim or q_shape[-1]
        self.query_kernel = self.add_weight(shape=(q_shape[-1], h, k), name="query_kernel")
        self.query_bias = self.add_weight(shape=(h, k), initializer="zeros", name="query_bias")
        self.key_kernel = self.add_weight(shape=(v_shape[-1], h, k), name="key_kernel")
        self.key_bias = self.add_weight(shape=(h, k), initializer="zeros", name="key_bias")
        self.value_kernel = self.add_weight(shape=(v_shape[-1], h, k), name="value_kernel")
        self.value_bias = self.add_weight(shape=(h, k), initializer="zeros", name="value_bias")
        self.output_kernel = self.add_weight(shape=(h, k, out), name="output_kernel")
        self.output_bias = self.add_weight(shape=(out,), initializer="zeros", name="output_bias")
        super().build(input_shape)

    def call(self, inputs, mask=None, key_mask=None, return_attention_scores=False):
        if isinstance(inputs, (list, tuple)):
            query, value = inputs
        else:
            query = value = inputs
        q = ops.einsum("btd,dhk->bhtk", query, self.query_kernel) + self.query_bias[None, :, None, :]
        k = ops.einsum("bsd,dhk->bhsk", value, self.key_kernel) + self.key_bias[None, :, None, :]
        v = ops.einsum("bsd,dhk->bhsk", value, self.value_kernel) + self.value_bias[None, :, None, :]
        scores = ops.einsum("bhtk,bhsk->bhts", q, k) / math.sqrt(self.key_dim)
        if self.causal:
            tq, ts = ops.shape(scores)[2], ops.shape(scores)[3]
            allowed = ops.arange(tq)[:, None] >= ops.arange(ts)[None, :]
            scores = _masked(scores, allowed[None, None])
        keys = _key_mask(key_mask, _split_mask(mask)[1])
        if keys is not None:
            scores = _masked(scores, keys[:, None, None, :])
        weights = ops.softmax(scores, axis=-1)
        heads = ops.einsum("bhts,bhsk->bthk", weights, v)
        out = ops.einsum("bthk,hkd->btd", heads, self.output_kernel) + self.output_bias
        return (out, weights) if return_attention_scores else out

    def compute_mask(self, inputs, mask=None):
        return _split_mask(mask)[0]

    def compute_output_shape(self, input_shape):
        q_shape, _ = _pair(self, input_shape)
        return q_shape[:-1] + (self.output_dim or q_shape[-1],)

    def get_config(self):
        config = super().get_config()
        config.update(num_heads=self.num_heads, key_dim=self.key_dim, output_dim=self.output_dim,
                      causal=self.causal)
        return config


@keras.saving.register_keras_serializable(package="suite")
class PositionalEncoding(layers.Layer):
    """Adds the sinusoidal encoding of Vaswani et al. (2017, Sec. 3.5):
    PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d)).
    Input (batch, time, d); output x + PE[:time]."""

    def __init__(self, base=10000.0, **kwargs):
        super().__init__(**kwargs)
        self.base = float(base)

    def build(self, input_shape):
        check_rank(self, input_shape, 3, _BTD)
        if input_shape[-1] is None:
            raise ValueError(f"PositionalEncoding expects a 3-D input {_BTD} with known features, "
                             f"got shape {tuple(input_shape)}")
        super().build(input_shape)

    def call(self, inputs):
        d = inputs.shape[-1]
        t = ops.shape(inputs)[1]
        pos = ops.cast(ops.arange(t), self.compute_dtype)[:, None]
        i = ops.arange(d)
        # Channel 2i and 2i+1 share the frequency base^(-2i/d).
        freq = ops.cast(ops.power(self.base, -((i // 2) * 2) / d), self.compute_dtype)
        angle = pos * freq[None, :]
        pe = ops.where((i % 2 == 0)[None, :], ops.sin(angle), ops.cos(angle))
        return inputs + pe[None]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(base=self.base)
        return config


class _TransformerBase(layers.Layer):
    def __init__(self, num_heads, key_dim, ff_dim, dropout=0.0, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.key_dim = int(key_dim)
        self.ff_dim = int(ff_dim)
        self.dropout = float(dropout)
        self.epsilon = float(epsilon)
        self.supports_masking = True  # the output keeps the (target) input's mask

    def _sublayers(self, d_model, n_attention):
        kw = dict(dtype=self.dtype_policy)
        self.attentions = [MultiHeadSelfAttention(self.num_heads, self.key_dim, output_dim=d_model,
                                                  causal=(i == 0 and n_attention == 2), name=f"attention{i}", **kw)
                           for i in range(n_attention)]
        self.norms = [layers.LayerNormalization(epsilon=self.epsilon, name=f"norm{i}", **kw)
                      for i in range(n_attention + 1)]
        self.ff1 = layers.Dense(self.ff_dim, activation="relu", name="ff1", **kw)
        self.ff2 = layers.Dense(d_model, name="ff2", **kw)
        self.drop = layers.Dropout(self.dropout, **kw)

    def _feed_forward(self, x, training):
        # Post-LN as in the paper: LayerNorm(x + Sublayer(x)).
        return self.norms[-1](x + self.drop(self.ff2(self.ff1(x)), training=training))

    def get_config(self):
        config = super().get_config()
        config.update(num_heads=self.num_heads, key_dim=self.key_dim, ff_dim=self.ff_dim, dropout=self.dropout,
                      epsilon=self.epsilon)
        return config


@keras.saving.register_keras_serializable(package="suite")
class TransformerEncoder(_TransformerBase):
    """Transformer encoder layer (Vaswani et al. 2017, Sec. 3.1):
    x = LN(x + MHA(x, x)); y = LN(x + FFN(x)), FFN = W2 relu(W1 x).
    ``key_mask`` (batch, time), or the input's Keras mask: padded positions
    are not attended to (their own outputs are computed but meaningless)."""

    def build(self, input_shape):
        check_rank(self, input_shape, 3, _BTD)
        d = input_shape[-1]
        self._sublayers(d, 1)
        self.attentions[0].build(tuple(input_shape))
        for n in self.norms:
            n.build(tuple(input_shape))
        self.ff1.build(tuple(input_shape))
        self.ff2.build(tuple(input_shape[:-1]) + (self.ff_dim,))
        super().build(input_shape)

    def call(self, inputs, training=None, mask=None, key_mask=None):
        keys = _key_mask(key_mask, mask)
        x = self.norms[0](inputs + self.drop(self.attentions[0](inputs, key_mask=keys), training=training))
        return self._feed_forward(x, training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


@keras.saving.register_keras_serializable(package="suite")
class TransformerDecoder(_TransformerBase):
    """Transformer decoder layer (Vaswani et al. 2017, Sec. 3.1): masked
    (causal) self-attention, attention over the encoder output, FFN, each
    as LN(x + Sublayer(x)). Inputs: [target (B, T, d), memory (B, S, dm)].
    ``memory_mask`` (batch, S), or the memory's Keras mask, hides padded
    memory positions from the cross-attention; the target's Keras mask is
    applied to the (causal) self-attention keys."""

    def build(self, input_shape):
        if not (isinstance(input_shape, (list, tuple)) and len(input_shape) == 2
                and isinstance(input_shape[0], (list, tuple))):
            raise ValueError(f"TransformerDecoder expects two inputs [target, memory], each of shape {_BTD}, "
                             f"got {input_shape}")
        t_shape, m_shape = tuple(input_shape[0]), tuple(input_shape[1])
        check_rank(self, t_shape, 3, "target " + _BTD)
        check_rank(self, m_shape, 3, "memory " + _BTD)
        self._sublayers(t_shape[-1], 2)
        self.attentions[0].build(t_shape)
        self.attentions[1].build([t_shape, m_shape])
        for n in self.norms:
            n.build(t_shape)
        self.ff1.build(t_shape)
        self.ff2.build(t_shape[:-1] + (self.ff_dim,))
        super().build(input_shape)

    def call(self, inputs, training=None, mask=None, memory_mask=None):
        target, memory = inputs
        target_mask, from_keras = mask if isinstance(mask, (list, tuple)) else (None, None)
        target_keys, memory_keys = _key_mask(None, target_mask), _key_mask(memory_mask, from_keras)
        x = self.norms[0](target + self.drop(self.attentions[0](target, key_mask=target_keys), training=training))
        x = self.norms[1](x + self.drop(self.attentions[1]([x, memory], key_mask=memory_keys), training=training))
        return self._feed_forward(x, training)

    def compute_mask(self, inputs, mask=None):
        return mask[0] if isinstance(mask, (list, tuple)) else None

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])
