"""Model registries of the sequence app.

RNN layers (`RNNS`): the suite's cells from `layers/` in `keras.layers.RNN`
("elman", "lstm", "gru") and Keras' built-in layers ("keras-elman" =
SimpleRNN, "keras-lstm", "keras-gru"); both kinds share one weight layout.

Classifiers (`CLASSIFIERS`): word ids (batch, time) -> class probabilities;
id 0 is padding and is masked out in every model.
"""

import keras
from keras import layers, ops

from core import precision, training
from core.errors import UserError
from core.registry import Registry
from layers import ElmanCell, GRUCell, LSTMCell, PositionalEncoding, TransformerEncoder


def load_run(out, task, description):
    """(config, best model) of a run folder of this app, refusing a run of another task."""
    config = check_task(training.load_config(out), out, task, description)
    return config, training.load_trained_model(out)


def check_task(config, out, task, description):
    """The config of a run of `task`, or a one-line error naming --run."""
    if config.get("task") != task:
        raise UserError(f"{out} is not a {description} run (it holds task {config.get('task')!r}); give --run the "
                        f"folder of a 'train --task {task}' run")
    return config


def copy_weights(trained, model, out):
    """`model.set_weights` from the run's trained model; a model.keras of another run (other
    layers or sizes) is a one-line `UserError`."""
    try:
        model.set_weights(trained.get_weights())
    except ValueError as error:
        raise UserError(f"cannot use the model in {out}: {str(error).splitlines()[0][:200]}; it does not fit "
                        f"the run's {training.CONFIG_FILE} (a model.keras of another run?)") from None


RNNS = Registry("recurrent cell")
NUM_STATES = {"elman": 1, "lstm": 2, "gru": 1, "keras-elman": 1, "keras-lstm": 2, "keras-gru": 1}


def _suite(cell_class):
    def build(units, **kwargs):
        return layers.RNN(cell_class(units), **kwargs)
    return build


RNNS.register("elman")(_suite(ElmanCell))
RNNS.register("lstm")(_suite(LSTMCell))
RNNS.register("gru")(_suite(GRUCell))
RNNS.register("keras-elman")(lambda units, **kw: layers.SimpleRNN(units, **kw))
RNNS.register("keras-lstm")(lambda units, **kw: layers.LSTM(units, **kw))
RNNS.register("keras-gru")(lambda units, **kw: layers.GRU(units, **kw))


def rnn_layer(cell, units, **kwargs):
    return RNNS.get(cell)(units, **kwargs)


# ------------------------------------------------------------ language model
def char_lm(vocab_size, *, cell="lstm", units=256, num_layers=2, embed_dim=64, dropout=0.0, batch_size=None,
            stateful=False, with_state=False, steps=None, unroll=False):
    """Embedding -> `num_layers` stacked RNNs -> Dense logits over characters.

    stateful=True: the RNNs carry their state from one batch to the next
    (truncated BPTT over long text; needs a fixed `batch_size`).
    with_state=True: the states are explicit inputs and outputs (for
    generation and export): inputs [tokens, state0_0, ...], outputs
    [logits, state0_0, ...]. The weights are the same in every variant, so
    `set_weights` moves them between a training and a generation model.
    """
    tokens = keras.Input(shape=(steps,), batch_size=batch_size, dtype="int32", name="tokens")
    x = layers.Embedding(vocab_size, embed_dim, name="embed")(tokens)
    state_inputs, state_outputs = [], []
    for i in range(num_layers):
        rnn = rnn_layer(cell, units, return_sequences=True, return_state=with_state, stateful=stateful,
                        unroll=unroll, name=f"rnn{i}")
        if with_state:
            initial = [keras.Input(shape=(units,), batch_size=batch_size, name=f"state{i}_{j}")
                       for j in range(NUM_STATES[cell])]
            state_inputs += initial
            x, *states = rnn(x, initial_state=initial if len(initial) > 1 else initial[0])
            state_outputs += states
        else:
            x = rnn(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"dropout{i}")(x)
    logits = layers.Dense(vocab_size, name="logits", dtype=precision.output_dtype())(x)
    if with_state:
        return keras.Model([tokens] + state_inputs, [logits] + state_outputs, name=f"char_lm_{cell}")
    return keras.Model(tokens, logits, name=f"char_lm_{cell}")


# --------------------------------------------------------------- classifiers
CLASSIFIERS = Registry("classifier")


@keras.saving.register_keras_serializable(package="sequence")
class MaskedMean(layers.Layer):
    """Mean over time of the non-padding steps (the mask of Embedding(mask_zero=True))."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if isinstance(inputs, (list, tuple)):  # [features, explicit float mask (batch, time)]
            inputs, mask = inputs
        elif mask is None:
            return ops.mean(inputs, axis=1)
        weights = ops.cast(mask, inputs.dtype)[:, :, None]
        return ops.sum(inputs * weights, axis=1) / ops.maximum(ops.sum(weights, axis=1), 1.0)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        if isinstance(input_shape, list):
            input_shape = input_shape[0]
        return (input_shape[0], input_shape[2])


@keras.saving.register_keras_serializable(package="sequence")
class MaskedMax(layers.Layer):
    """Maximum over time of the non-padding steps (the Keras mask); a quote without words gives zeros.

    Padded steps are filled with each quote's own minimum over time rather than a large negative
    constant, so the filled tensor keeps the features' range (int8 TFLite quantizes it with the
    features' scale)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            return ops.max(inputs, axis=1)
        real = ops.expand_dims(mask, -1)
        lowest = ops.min(inputs, axis=1, keepdims=True)
        peak = ops.max(ops.where(real, inputs, lowest), axis=1)
        return ops.where(ops.any(real, axis=1), peak, ops.zeros_like(peak))

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


@keras.saving.register_keras_serializable(package="sequence")
class KeyMask(layers.Layer):
    """Token ids (batch, time) -> boolean (batch, time), True at real tokens (id != 0): the
    `key_mask` of the attention layers, for models whose embeddings carry no Keras mask."""

    def call(self, ids):
        return ops.not_equal(ids, 0)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


@keras.saving.register_keras_serializable(package="sequence")
class PaddingMask(layers.Layer):
    """Zero the features at padding positions (token id 0); returns
    (features, mask as float), the mask for `MaskedMean` and the encoder's
    `key_mask` (runs trained before the attention layers took a key mask
    also applied it to the encoder's output: `pad_mask_out`)."""

    def call(self, inputs):
        x, ids = inputs
        mask = ops.cast(ops.not_equal(ids, 0), x.dtype)
        return x * mask[:, :, None], mask

    def compute_output_shape(self, input_shape):
        return input_shape[0], input_shape[1]


def _ids(sequence_length):
    return keras.Input(shape=(sequence_length,), dtype="int32", name="ids")


def _head(ids, features, num_classes, name, dropout=0.3):
    features = layers.Dropout(dropout)(features)
    # float32 under a mixed policy (core.precision.output_dtype): a bfloat16/float16 softmax loses the small
    # probabilities
    probabilities = layers.Dense(num_classes, activation="softmax", name="probabilities",
                                 dtype=precision.output_dtype())
    return keras.Model(ids, probabilities(features), name=name)


@CLASSIFIERS.register("bag")
def bag_of_embeddings(vocab_size, num_classes, sequence_length, embed_dim=64, dropout=0.3, unroll=False):
    """Mean of the word embeddings (a bag of words), then softmax."""
    ids = _ids(sequence_length)
    x = layers.Embedding(vocab_size, embed_dim, mask_zero=True, name="embed")(ids)
    return _head(ids, MaskedMean(name="mean")(x), num_classes, "bag", dropout)


POOLINGS = ("mean-max", "last")


def _rnn_features(rnn, x, pooling):
    """pooling "mean-max": [mean; max] of the RNN's outputs over the real words (its mask), so every
    word's contextual features reach the softmax; "last": the state after the last word. The
    default is the one that did better on the validation quotes (bench/textclass_search.py)."""
    if pooling == "last":
        return rnn(x)
    if pooling != "mean-max":
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    outputs = rnn(x)
    return layers.Concatenate(name="mean_max")([MaskedMean(name="mean")(outputs), MaskedMax(name="max")(outputs)])


@CLASSIFIERS.register("lstm")
def lstm_classifier(vocab_size, num_classes, sequence_length, embed_dim=64, units=64, dropout=0.3, unroll=False,
                    pooling="mean-max"):
    """The suite's LSTM over the words (padding masked), its outputs pooled (`_rnn_features`)."""
    ids = _ids(sequence_length)
    x = layers.Embedding(vocab_size, embed_dim, mask_zero=True, name="embed")(ids)
    rnn = rnn_layer("lstm", units, return_sequences=pooling != "last", unroll=unroll, name="lstm")
    return _head(ids, _rnn_features(rnn, x, pooling), num_classes, "lstm", dropout)


@CLASSIFIERS.register("bigru")
def bigru_classifier(vocab_size, num_classes, sequence_length, embed_dim=64, units=48, dropout=0.3,
                     unroll=False, pooling="mean-max"):
    """Bidirectional GRU (suite cell), the forward and backward outputs pooled (`_rnn_features`)."""
    ids = _ids(sequence_length)
    x = layers.Embedding(vocab_size, embed_dim, mask_zero=True, name="embed")(ids)
    rnn = layers.Bidirectional(rnn_layer("gru", units, return_sequences=pooling != "last", unroll=unroll),
                               name="bigru")
    return _head(ids, _rnn_features(rnn, x, pooling), num_classes, "bigru", dropout)


@CLASSIFIERS.register("transformer")
def transformer_classifier(vocab_size, num_classes, sequence_length, embed_dim=64, num_heads=4, ff_dim=128,
                           dropout=0.3, unroll=False):
    """Embedding + sinusoidal positions -> one Transformer encoder layer ->
    mean over the non-padding positions. Padded positions are masked as
    attention keys and left out of the mean, so the probabilities do not
    depend on the amount of padding."""
    ids = _ids(sequence_length)
    x = layers.Embedding(vocab_size, embed_dim, name="embed")(ids)
    x = PositionalEncoding(name="positions")(x)
    x, mask = PaddingMask(name="pad_mask")([x, ids])
    x = TransformerEncoder(num_heads, embed_dim // num_heads, ff_dim, dropout=0.1, name="encoder")(x, key_mask=mask)
    pooled = MaskedMean(name="mean")([x, mask])
    return _head(ids, pooled, num_classes, "transformer", dropout)


def build_classifier(name, vocab_size, num_classes, sequence_length, dropout=0.3, unroll=False):
    """`dropout`: the rate before the softmax layer; `unroll=True` (for TFLite) unrolls the recurrent models over
    the fixed sequence length."""
    return CLASSIFIERS.get(name)(vocab_size, num_classes, sequence_length, dropout=dropout, unroll=unroll)
