"""Sequence to sequence with attention: human-written dates -> ISO 8601.

  data      Babel writes random dates in 10 locales and 14 CLDR formats
            ("jeudi 4 mars 2021", "4. März 2021", "Mar 4, 2021", "04/03/21" ...);
            the target is "2021-03-04". Inputs are characters (a
            character-level TextVectorization adapted on the training dates,
            padded to `MAX_INPUT`); outputs are the 13 symbols pad, <s>,
            </s>, 0-9 and "-" (the end symbol closes every target).
  models    "bahdanau": a bidirectional GRU encoder (the suite's GRUCell) and
            a GRU decoder whose output attends over the encoder states with
            additive (Bahdanau) scores (`layers.AdditiveAttention`), the
            attention context and the decoder state feeding the softmax.
            "transformer": sinusoidal positions, `TransformerEncoder` x2,
            `TransformerDecoder` x2 (causal self-attention + cross-attention).
            Both train with teacher forcing.
  evaluate  exact-match accuracy (the whole ISO string right) with greedy or
            beam decoding; attention alignment PNGs.
  export    SavedModel whose `serving_default` takes raw date strings and
            returns ISO strings (vectorization and greedy decoding inside);
            TFLite: source ids -> greedy symbol ids (apps/sequence/exports.py).
"""

import json
import os
import warnings

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from apps.sequence import data, decoding
from apps.sequence.config import DatesConfig
from apps.sequence.models import KeyMask, copy_weights, load_run
from core import distribute, optimizers, precision, results, training
from core.cli import run_config
from core.data import batched
from core.registry import Registry
from layers import AdditiveAttention, GRUCell, PositionalEncoding, TransformerDecoder, TransformerEncoder

APP = "sequence"
MAX_INPUT = 48
TARGET_VOCAB = ["", "<s>", "</s>"] + list("0123456789-")
PAD, START, END = 0, 1, 2
TARGET_LENGTH = 11  # 10 ISO characters + </s>
SEQ2SEQ = Registry("seq2seq model")
# The attention layers get the source padding mask explicitly (`KeyMask` of the source ids), also in the
# one-step decoders, whose memory input carries no Keras mask. The Bahdanau memory still carries the Keras
# mask of the source embedding, and the one-step decoder model warns that it drops it when fed that memory.
warnings.filterwarnings("ignore", message=".*does not support masking.*")


def encode_targets(isos):
    index = {c: i for i, c in enumerate(TARGET_VOCAB)}
    out = np.array([[index[c] for c in iso] + [END] for iso in isos], np.int32)
    return np.concatenate([np.full((len(out), 1), START, np.int32), out[:, :-1]], axis=1), out


def decode_targets(ids):
    text = []
    for i in ids:
        if i == END:
            break
        if i > END:
            text.append(TARGET_VOCAB[i])
    return "".join(text)


def make_vectorizer(vocab):
    vectorizer = layers.TextVectorization(standardize=None, split="character", output_mode="int",
                                          output_sequence_length=MAX_INPUT, vocabulary=vocab[2:],
                                          name="date_vectorizer")
    vectorizer(tf.constant(["a"]))
    return vectorizer


def vectorize(vectorizer, texts):
    return vectorizer(tf.constant(list(texts))).numpy().astype(np.int32)


# -------------------------------------------------------------------- models
class Seq2Seq:
    """A training model plus the encoder / one-step decoder that decoding needs, sharing weights."""

    def step_states(self, source_ids):
        """Initial decoder states for a batch of source ids (list, batch first)."""
        raise NotImplementedError

    def step(self, tokens, states):
        """(batch,) tokens -> (batch, vocab) logits, new states."""
        raise NotImplementedError


@SEQ2SEQ.register("bahdanau")
class Bahdanau(Seq2Seq):
    def __init__(self, source_vocab, units=128, embed_dim=32):
        self.units = units
        src = keras.Input(shape=(MAX_INPUT,), dtype="int32", name="source")
        tgt = keras.Input(shape=(None,), dtype="int32", name="target_in")
        embed_src = layers.Embedding(source_vocab, embed_dim, mask_zero=True, name="embed_source")
        encoder = layers.Bidirectional(layers.RNN(GRUCell(units), return_sequences=True, return_state=True),
                                       name="encoder")
        bridge = layers.Dense(units, activation="tanh", name="bridge")
        embed_tgt = layers.Embedding(len(TARGET_VOCAB), embed_dim, name="embed_target")
        decoder = layers.RNN(GRUCell(units), return_sequences=True, return_state=True, name="decoder")
        attention = AdditiveAttention(units, return_attention=True, name="attention")
        combine = layers.Dense(units, activation="tanh", name="combine")
        logits = layers.Dense(len(TARGET_VOCAB), name="logits", dtype=precision.output_dtype())

        def encode(source):
            memory, forward, backward = encoder(embed_src(source))
            return memory, bridge(layers.Concatenate()([forward, backward]))

        def attend(outputs, memory, source):
            # Padded source characters get no attention weight.
            context, weights = attention([outputs, memory], key_mask=KeyMask()(source))
            return logits(combine(layers.Concatenate()([outputs, context]))), weights

        def decode(target, state, memory, source):
            outputs, _ = decoder(embed_tgt(target), initial_state=state)
            return attend(outputs, memory, source)[0]

        def decode_step(token, state, memory, source):
            # One step is one call of the decoder's cell: an RNN loop over one step would hold a TensorList
            # of unknown batch size, which TFLite cannot convert.
            state, _ = decoder.cell(ops.squeeze(embed_tgt(token), 1), [state])
            step_logits, weights = attend(ops.expand_dims(state, 1), memory, source)
            return step_logits, state, weights

        memory, state = encode(src)
        out = decode(tgt, state, memory, src)
        self.model = keras.Model([src, tgt], out, name="bahdanau")
        self.encoder = keras.Model(src, [memory, state], name="bahdanau_encoder")
        token = keras.Input(shape=(1,), dtype="int32", name="token")
        state_in = keras.Input(shape=(units,), name="state")
        memory_in = keras.Input(shape=(MAX_INPUT, 2 * units), name="memory")
        source_in = keras.Input(shape=(MAX_INPUT,), dtype="int32", name="source")
        step_logits, step_state, step_weights = decode_step(token, state_in, memory_in, source_in)
        self.decoder = keras.Model([token, state_in, memory_in, source_in], [step_logits, step_state, step_weights],
                                   name="bahdanau_step")
        self._encode = tf.function(lambda s: self.encoder(s, training=False), reduce_retracing=True)
        self._decode = tf.function(lambda t, h, m, s: self.decoder([t, h, m, s], training=False),
                                   reduce_retracing=True)

    def step_states(self, source_ids):
        memory, state = self._encode(tf.constant(source_ids))
        return [memory.numpy(), state.numpy(), np.asarray(source_ids, np.int32)]

    def step(self, tokens, states, with_attention=False):
        memory, state, source = states
        step_logits, state, weights = self._decode(tf.constant(np.asarray(tokens, np.int32)[:, None]),
                                                   tf.constant(state), tf.constant(memory), tf.constant(source))
        result = step_logits.numpy()[:, 0], [memory, state.numpy(), source]
        return result + (weights.numpy()[:, 0],) if with_attention else result


@SEQ2SEQ.register("transformer")
class Transformer(Seq2Seq):
    def __init__(self, source_vocab, d_model=64, num_heads=4, ff_dim=128, num_layers=2, dropout=0.1):
        src = keras.Input(shape=(MAX_INPUT,), dtype="int32", name="source")
        tgt = keras.Input(shape=(None,), dtype="int32", name="target_in")
        scale = float(np.sqrt(d_model))
        embed_src = layers.Embedding(source_vocab, d_model, name="embed_source")
        embed_tgt = layers.Embedding(len(TARGET_VOCAB), d_model, name="embed_target")
        positions = PositionalEncoding(name="positions")
        encoders = [TransformerEncoder(num_heads, d_model // num_heads, ff_dim, dropout, name=f"encoder{i}")
                    for i in range(num_layers)]
        decoders = [TransformerDecoder(num_heads, d_model // num_heads, ff_dim, dropout, name=f"decoder{i}")
                    for i in range(num_layers)]
        logits = layers.Dense(len(TARGET_VOCAB), name="logits", dtype=precision.output_dtype())
        scale_layer = layers.Rescaling(scale, name="scale_embedding")

        # Padding: the encoder's keys and the decoders' memory are masked where the source id is 0.
        def encode(source):
            x, keys = positions(scale_layer(embed_src(source))), KeyMask()(source)
            for layer in encoders:
                x = layer(x, key_mask=keys)
            return x

        def decode(target, memory, source):
            x, keys = positions(scale_layer(embed_tgt(target))), KeyMask()(source)
            for layer in decoders:
                x = layer([x, memory], memory_mask=keys)
            return logits(x)

        self._embed_target = lambda target: positions(scale_layer(embed_tgt(target)))
        self._decoders = decoders
        memory = encode(src)
        self.model = keras.Model([src, tgt], decode(tgt, memory, src), name="transformer")
        self.encoder = keras.Model(src, memory, name="transformer_encoder")
        prefix = keras.Input(shape=(None,), dtype="int32", name="prefix")
        memory_in = keras.Input(shape=(MAX_INPUT, d_model), name="memory")
        source_in = keras.Input(shape=(MAX_INPUT,), dtype="int32", name="source")
        self.decoder = keras.Model([prefix, memory_in, source_in], decode(prefix, memory_in, source_in),
                                   name="transformer_decoder")
        self._encode = tf.function(lambda s: self.encoder(s, training=False), reduce_retracing=True)
        self._decode = tf.function(lambda p, m, s: self.decoder([p, m, s], training=False), reduce_retracing=True)

    def step_states(self, source_ids):
        memory = self._encode(tf.constant(source_ids)).numpy()
        # step() appends <s> to the empty prefix first
        return [memory, np.asarray(source_ids, np.int32), np.zeros((len(source_ids), 0), np.int32)]

    def cross_attention(self, prefix, memory, source_ids):
        """Cross-attention weights (batch, target, source) of the last decoder layer, mean over heads,
        computed with that layer's own sublayers (self-attention + norm, then attention over memory)."""
        keys = np.asarray(source_ids) != 0
        x = self._embed_target(prefix)
        for layer in self._decoders[:-1]:
            x = layer([x, memory], memory_mask=keys)
        last = self._decoders[-1]
        x = last.norms[0](x + last.attentions[0](x))
        _, weights = last.attentions[1]([x, memory], key_mask=keys, return_attention_scores=True)
        return keras.ops.convert_to_numpy(keras.ops.mean(weights, axis=1))

    def step(self, tokens, states):
        memory, source, prefix = states
        prefix = np.concatenate([prefix, np.asarray(tokens, np.int32)[:, None]], axis=1)
        out = self._decode(tf.constant(prefix), tf.constant(memory), tf.constant(source)).numpy()
        return out[:, -1], [memory, source, prefix]


def build(name, source_vocab, **sizes):
    return SEQ2SEQ.get(name)(source_vocab, **sizes)


def first_logits(net, source_ids):
    """Logits for the first output symbol (after <s>) and the states there."""
    states = net.step_states(source_ids)
    return net.step(np.full(len(source_ids), START, np.int32), states)[:2]


def greedy_batch(net, source_ids):
    """Batched greedy decoding: ISO strings for every source row."""
    logits, states = first_logits(net, source_ids)
    out = []
    for _ in range(TARGET_LENGTH):
        tokens = logits.argmax(axis=-1).astype(np.int32)
        out.append(tokens)
        logits, states = net.step(tokens, states)[:2]
    return [decode_targets(row) for row in np.stack(out, axis=1)]


def decode_one(net, source_ids, width=1):
    """One source row -> ISO string by beam search (width 1 = greedy)."""
    logits, states = first_logits(net, source_ids[None])
    if width == 1:
        ids = decoding.greedy(net.step, logits[0], states, TARGET_LENGTH, end_token=END)
    else:
        ids = decoding.beam_search(net.step, logits[0], states, TARGET_LENGTH, width=width, end_token=END)
    return decode_targets(ids)


# --------------------------------------------------------------------- train
def train(config: DatesConfig, *, run, strategy="default", sizes=None):
    """`sizes`: keyword arguments of the model class (units, d_model, num_layers ...), recorded in the run."""
    c = config
    distribution = distribute.get_strategy(strategy)
    training.set_seed(c.seed)
    train_pairs, val_pairs, _ = data.date_splits(c.train_size, c.val_size, c.test_size, seed=0)
    vocab = data.char_vectorizer([t for t, _ in train_pairs]).get_vocabulary()
    vectorizer = make_vectorizer(vocab)

    def dataset(pairs, shuffle):
        tgt_in, tgt_out = encode_targets([iso for _, iso in pairs])
        ds = tf.data.Dataset.from_tensor_slices(((vectorize(vectorizer, [t for t, _ in pairs]), tgt_in), tgt_out))
        return batched(ds, c.batch_size, shuffle=shuffle, seed=c.seed, what="the dates")

    with distribution.scope(), precision.policy(c.precision):
        net = build(c.model, len(vocab), **(sizes or {}))
        net.model.compile(optimizer=optimizers.Adam(c.learning_rate, clipnorm=1.0),
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"],
                          jit_compile=precision.xla(c.jit))
    training.save_config(run, run_config(c, APP, task="dates", vocab=vocab, sizes=sizes or {}, strategy=strategy,
                                         replicas=distribution.num_replicas_in_sync),
                         identity_keys=("task", "model"))
    print(f"training {c.model} date normaliser on {c.train_size} dates (input vocabulary {len(vocab)} characters)")
    return training.fit(net.model, dataset(train_pairs, True), dataset(val_pairs, False), epochs=c.epochs,
                        run_dir=run, patience=c.patience)


class Normalizer:
    def __init__(self, out):
        self.config, trained = load_run(out, "dates", "date-normalisation")
        config = self.config
        self.net = build(config["model"], len(config["vocab"]), **config.get("sizes", {}))
        copy_weights(trained, self.net.model, out)
        self.vectorizer = make_vectorizer(config["vocab"])

    def ids(self, texts):
        return vectorize(self.vectorizer, texts)

    def normalize(self, text, width=1):
        return decode_one(self.net, self.ids([text])[0], width=width)

    def normalize_batch(self, texts):
        return greedy_batch(self.net, self.ids(texts))


def exact_match(normalizer, pairs, width=1):
    texts, isos = [t for t, _ in pairs], [i for _, i in pairs]
    if width == 1:
        predictions = normalizer.normalize_batch(texts)
    else:
        predictions = [normalizer.normalize(t, width=width) for t in texts]
    return float(np.mean([p == i for p, i in zip(predictions, isos)])), predictions


def attention_plots(normalizer, texts, png_path):
    """Alignment matrices (output symbol x input character), one panel per date: the Bahdanau weights,
    or the Transformer's last cross-attention averaged over heads."""
    import matplotlib.pyplot as plt

    net = normalizer.net
    fig, axes = plt.subplots(len(texts), 1, figsize=(9, 2.6 * len(texts)))
    for ax, text in zip(np.atleast_1d(axes), texts):
        ids = normalizer.ids([text])
        states = net.step_states(ids)
        token, rows, out = np.array([START], np.int32), [], []
        for _ in range(TARGET_LENGTH):
            if isinstance(net, Bahdanau):
                logits, states, weights = net.step(token, states, with_attention=True)
                rows.append(weights[0])
            else:
                logits, states = net.step(token, states)
            token = logits.argmax(axis=-1).astype(np.int32)
            if token[0] == END:
                break
            out.append(TARGET_VOCAB[token[0]])
        if not isinstance(net, Bahdanau):  # weights of each output symbol's query, from the decoded prefix
            prefix = np.array([[START] + [TARGET_VOCAB.index(c) for c in out]], np.int32)
            rows = list(net.cross_attention(prefix[:, :len(out)], states[0], ids)[0])
        n = max(len(text), 1)
        matrix = np.array(rows)[:len(out), :n]
        ax.imshow(matrix, cmap="viridis", aspect="auto", vmin=0, vmax=1)
        ax.set_xticks(range(n), list(text), fontsize=8)
        ax.set_yticks(range(len(out)), out, fontsize=8)
        ax.set_title(f"{text!r} -> {''.join(out)}", fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(png_path)), exist_ok=True)
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return png_path


def evaluate(*, out, width=1, limit=None):
    normalizer = Normalizer(out)
    config = normalizer.config
    _, _, test_pairs = data.date_splits(config["train_size"], config["val_size"], config["test_size"], seed=0)
    test_pairs = test_pairs[:limit] if limit else test_pairs
    accuracy, predictions = exact_match(normalizer, test_pairs, width)
    report = {"model": config["model"], "exact_match": accuracy, "width": width, "num_examples": len(test_pairs)}
    print(f"{config['model']}: test exact-match {accuracy:.4f} over {len(test_pairs)} dates "
          f"({'greedy' if width == 1 else f'beam width {width}'})")
    wrong = [(t, p, i) for (t, i), p in zip(test_pairs, predictions) if p != i][:5]
    for text, got, want in wrong:
        print(f"  wrong: {text!r} -> {got} (expected {want})")
    png = attention_plots(normalizer, [t for t, _ in test_pairs[:4]], os.path.join(out, "attention.png"))
    report["attention_png"] = png
    print(f"wrote {png}")
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(report, f, indent=2)
    results.write_results(out, app="sequence", model=f"dates_{config['model']}", dataset="generated dates",
                          metrics={"exact_match": accuracy}, budget=results.budget_of(config), seed=config.get("seed"))
    return report


def export_run(*, out, export_dir="saved_models", version=None,
               kinds=("float", "dynamic")):
    """Writes saved_models/sequence_dates_<model>/<v>/: date strings -> ISO strings (greedy, inside the graph), and
    TFLite files of source ids -> greedy symbol ids (see apps/sequence/exports.py)."""
    from apps.sequence.exports import export_dates

    return export_dates(out=out, export_dir=export_dir, version=version, kinds=kinds)
