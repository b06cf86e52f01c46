"""Exports of the seq2seq models that decode greedily: date normalisation and captioning.

Both go through `core.export.export_model`, in one atomic version folder:

  SavedModel (TF Serving)  raw inputs -> text: vectorization, the greedy loop and
                           the symbol lookup in the graph (date strings -> `iso`,
                           uint8 images -> `caption`);
  TFLite (devices)         numbers in, numbers out, builtin ops only: source ids
                           (or uint8 images) -> the greedy `tokens` and their
                           `logits`. Its SavedModel is the version folder's
                           `tflite_source/`; `assets.extra/vocabulary.json` maps
                           ids to characters and words.

The served signature itself cannot be converted (docs/deployment.md quotes the
converter): its vectorizer and symbol lookup are string ops, and Keras' RNN loop
collects its outputs in a TensorList whose elements have the unknown batch size.
So the device graph's loops are `tf.while_loop`s whose variables are plain tensors
of a fixed shape (the outputs are added into zeros at their step), which the
converter turns into a TFLite WHILE op: the greedy decoding (`greedy_loop`) and
the Bahdanau encoder's two GRU passes (`looped_encoder`). Unrolling them instead
converts too, but gives a file three times larger and an export twice as slow.

Parity: the SavedModel's text equals Keras' greedy decoding; the float TFLite
file's tokens equal the SavedModel's (and its logits are within float32
rounding, `decoding.greedy_tokens_check`), and its decoded text equals Keras'
for every input where float rounding cannot swap the two best logits.
"""

import json
import os

import numpy as np
import tensorflow as tf

from apps.sequence import data, decoding, seq2seq
from core import export
from core.errors import UserError

VOCABULARY = os.path.join("assets.extra", "vocabulary.json")
TOKENS = ["tokens", "logits"]
TEXT = {"dates": "iso", "captions": "caption"}  # the served output of each


def greedy_loop(step, states, first_token, batch, length, vocab_size):
    """Greedy decoding: `step(t, token (batch, 1), states) -> (logits (batch, 1, vocab), states)` run `length`
    times in a `tf.while_loop` that writes each step's token and logits into zeros of the final shape (a
    TensorArray would be a TensorList of unknown batch size, which the converter cannot lower).
    {"tokens": (batch, length) int32, "logits": (batch, length, vocab)}."""

    def body(t, token, states, tokens, logits):
        step_logits, states = step(t, token[:, None], states)
        # tf.argmax, not keras.ops.argmax: the latter adds a -0.0 fix-up (BitwiseAnd) TFLite lacks
        token = tf.argmax(step_logits[:, 0], axis=-1, output_type=tf.int32)
        at_t = tf.one_hot(t, length)  # adding x * 1 and x * 0 is exact: each step's values stay as computed
        return (t + 1, token, states, tokens + tf.cast(at_t, tf.int32)[None] * token[:, None],
                logits + at_t[None, :, None] * step_logits)

    loop = tf.while_loop(lambda t, *_: t < length, body,
                         (tf.constant(0), tf.fill([batch], first_token), states, tf.zeros([batch, length], tf.int32),
                          tf.zeros([batch, length, vocab_size])))
    return {"tokens": loop[3], "logits": loop[4]}


def text_until(tokens, table, end, separator=""):
    """(batch, length) ids -> strings: `table`'s symbols before the first `end`."""
    before_end = tf.cumsum(tf.cast(tf.equal(tokens, end), tf.int32), axis=1) == 0
    kept = tf.ragged.boolean_mask(tf.gather(table, tokens), before_end)
    return tf.strings.reduce_join(kept, axis=1, separator=separator)


def undecided_rows(logits, tokens, end, tolerance):
    """Rows where, before (and at) their end token, float rounding of `tolerance` could swap the two best
    logits of some step (`decoding.greedy_agreement`): two correct decoders may write different text there."""
    gaps = decoding.top_two_gap(logits)
    rows = []
    for row, ids in zip(gaps, tokens):
        ends = np.flatnonzero(ids == end)
        rows.append(bool((row[:int(ends[0]) + 1 if len(ends) else len(ids)] <= 2 * tolerance).any()))
    return np.array(rows)


def check_texts(report, reference_texts, device_texts, end, what):
    """The SavedModel's text must equal Keras' exactly (the same TensorFlow ops); the float TFLite file's,
    wherever no step was undecided. Adds the figures to `report`."""
    served = [s.decode("utf-8") for s in report["saved_model_outputs"][TEXT[what]]]
    if served != reference_texts:
        raise export.ParityError(f"the SavedModel's {what} differ from Keras greedy decoding: "
                                 f"{served[:3]} vs {reference_texts[:3]}")
    source = report["tflite_source_outputs"]
    tolerance = decoding.FLOAT_RELATIVE * (1.0 + float(np.abs(source["logits"]).max()))
    undecided = undecided_rows(source["logits"], source["tokens"], end, tolerance)
    wrong = [i for i, (a, b) in enumerate(zip(reference_texts, device_texts)) if a != b and not undecided[i]]
    if wrong:
        i = wrong[0]
        raise export.ParityError(f"{report['tflite']['float']}: greedy {what} {device_texts[i]!r}, Keras "
                                 f"{reference_texts[i]!r} (and {len(wrong) - 1} more)")
    report["tflite_same_text"] = float(np.mean([a == b for a, b in zip(reference_texts, device_texts)]))
    report["undecided_rows"] = int(undecided.sum())
    return served


def print_report(report, what, inputs):
    print(f"wrote SavedModel {report['saved_model']} (signature '{export.SIGNATURE}': {inputs} -> {TEXT[what]}); "
          f"same {what} as Keras greedy decoding on {len(report['saved_model_outputs'][TEXT[what]])} inputs")
    for kind, path in report["tflite"].items():
        figures = report["parity"][kind]
        print(f"wrote TFLite {path} ({os.path.getsize(path) / 1024:.0f} KiB; max |logit difference| "
              f"{figures['max_abs_diff']:.2g}, same tokens {figures['token_agreement']:.1%})")
    print(f"float TFLite greedy {what} identical to Keras' on {report['tflite_same_text']:.0%} of the inputs "
          f"({report['undecided_rows']} with a step float rounding could decide)")


# ---------------------------------------------------------------------- dates
def looped_encoder(net):
    """The Bahdanau encoder (embedding, forward and backward GRU over the MAX_INPUT characters, bridge) with
    the trained layers and cells, its two passes `tf.while_loop`s TFLite converts (see the module's
    docstring). As Keras' masked RNN: a padded character leaves the state as it was and outputs zeros."""
    embed = net.model.get_layer("embed_source")
    both, bridge = net.model.get_layer("encoder"), net.model.get_layer("bridge")
    length = seq2seq.MAX_INPUT

    def run(cell, inputs, real, order):
        def body(i, state, outputs):
            t = order[i]
            new, _ = cell(inputs[:, t], [state])
            keep = real[:, t][:, None]
            output = tf.where(keep, new, tf.zeros_like(new))
            return i + 1, tf.where(keep, new, state), outputs + tf.one_hot(t, length)[None, :, None] * output[:, None]

        batch = tf.shape(inputs)[0]
        _, state, outputs = tf.while_loop(lambda i, *_: i < length, body, (
            tf.constant(0), tf.zeros([batch, cell.units]), tf.zeros([batch, length, cell.units])))
        return outputs, state

    def encode(source, training=False):
        inputs, real = embed(source), source != 0
        ahead, ahead_state = run(both.forward_layer.cell, inputs, real, tf.range(length))
        behind, behind_state = run(both.backward_layer.cell, inputs, real, tf.range(length - 1, -1, -1))
        return tf.concat([ahead, behind], axis=-1), bridge(tf.concat([ahead_state, behind_state], axis=-1))

    return encode


def dates_decoder(net, encoder=None):
    """(start(source) -> states, step) of a trained `seq2seq` model in the graph; `encoder`: another encoder
    of the same weights (`looped_encoder`)."""
    encoder = encoder or net.encoder
    if isinstance(net, seq2seq.Bahdanau):
        def start(source):
            memory, state = encoder(source, training=False)
            return [state, memory, source]

        def step(t, token, states):
            state, memory, source = states
            logits, state, _ = net.decoder([token, state, memory, source], training=False)
            return logits, [state, memory, source]
    else:
        # The Transformer decodes the whole prefix at every step; a buffer of fixed length keeps the loop's
        # shapes fixed, and the causal decoder reads position t as if the prefix ended there.
        def start(source):
            return [tf.zeros([tf.shape(source)[0], seq2seq.TARGET_LENGTH], tf.int32),
                    encoder(source, training=False), source]

        def step(t, token, states):
            prefix, memory, source = states
            prefix = prefix + tf.one_hot(t, seq2seq.TARGET_LENGTH, dtype=tf.int32)[None] * token
            logits = net.decoder([prefix, memory, source], training=False)
            return tf.gather(logits, [t], axis=1), [prefix, memory, source]
    return start, step


def greedy_dates(net, source, encoder=None):
    start, step = dates_decoder(net, encoder)
    return greedy_loop(step, start(source), seq2seq.START, tf.shape(source)[0], seq2seq.TARGET_LENGTH,
                       len(seq2seq.TARGET_VOCAB))


def export_dates(*, out, export_dir="saved_models", version=None,
                 kinds=("float", "dynamic"), count=64):
    """Writes saved_models/sequence_dates_<model>/<v>/: date strings -> ISO strings; tflite/<v>/: source ids ->
    greedy symbol ids and logits."""
    if "float" not in kinds:
        raise ValueError(f"kinds {kinds} lack 'float', the file the greedy parity check runs")
    normalizer = seq2seq.Normalizer(out)
    config, net, vectorizer = normalizer.config, normalizer.net, normalizer.vectorizer
    symbols = tf.constant([s if i > seq2seq.END else "" for i, s in enumerate(seq2seq.TARGET_VOCAB)])

    def serve(text):
        tokens = greedy_dates(net, tf.cast(vectorizer(text), tf.int32))["tokens"]
        return {"iso": text_until(tokens, symbols, seq2seq.END)}

    # The device graph: the same layers; the Bahdanau encoder's GRU passes as loops TFLite converts.
    encoder = looped_encoder(net) if isinstance(net, seq2seq.Bahdanau) else net.encoder
    _, _, test_pairs = data.date_splits(config["train_size"], config["val_size"], config["test_size"], seed=0)
    texts = [t for t, _ in test_pairs[:count]]
    source = {"source": normalizer.ids(texts)}
    report = export.export_model(
        export.endpoint_archive(serve, [tf.TensorSpec([None], tf.string, name="text")],
                                [net.encoder, net.decoder, vectorizer]),
        export.export_folder("sequence", f"dates_{config['model']}", export_dir), input_names=["text"],
        output_names=["iso"],
        sample_inputs={"text": np.array(texts)}, version=version, kinds=kinds,
        check=decoding.greedy_tokens_check(seq2seq.END),
        tflite_from=export.TFLiteSource(
            export.endpoint_archive(lambda ids: greedy_dates(net, ids, encoder),
                                    [tf.TensorSpec([None, seq2seq.MAX_INPUT], tf.int32, name="source")],
                                    [net.model, net.decoder]), ["source"], TOKENS, source),
        extra_files={VOCABULARY: json.dumps({"source": config["vocab"], "source_length": seq2seq.MAX_INPUT,
                                             "target": seq2seq.TARGET_VOCAB, "end": seq2seq.END}) + "\n"})
    lite = export.run_tflite(report["tflite"]["float"], source)["tokens"]
    check_texts(report, normalizer.normalize_batch(texts), [seq2seq.decode_targets(row) for row in lite],
                seq2seq.END, "dates")
    print_report(report, "dates", "date strings")
    return report


# ----------------------------------------------------------------- captioning
def caption_decoder(net):
    def start(images):
        memory, state = net.encoder(tf.cast(images, tf.float32), training=False)
        return [state, memory]

    def step(t, token, states):
        state, memory = states
        logits, state, _ = net.decoder([token, state, memory], training=False)
        return logits, [state, memory]

    return start, step


def export_captioner(*, out, export_dir="saved_models", version=None,
                     kinds=("float", "dynamic"), count=64):
    """Writes saved_models/sequence_caption/<v>/: uint8 images (N, S, S, 1) -> caption strings; tflite/<v>/: uint8
    images -> greedy word ids and logits."""
    from apps.sequence.caption_data import CAPTION_LENGTH
    from apps.sequence.captioning import CaptionModel

    if "float" not in kinds:
        raise ValueError(f"kinds {kinds} lack 'float', the file the greedy parity check runs")
    model = CaptionModel(out)
    net, size = model.net, model.config["image_size"]
    start, step = caption_decoder(net)
    words = tf.constant(model.vocab)

    def greedy_words(images):
        return greedy_loop(step, start(images), model.start, tf.shape(images)[0], CAPTION_LENGTH, len(model.vocab))

    def serve(image):
        return {"caption": text_until(greedy_words(image)["tokens"], words, model.end, separator=" ")}

    images = model.load_split("test", limit=count).images
    if not len(images):
        raise UserError("no test scenes to check the export on")
    spec = [tf.TensorSpec([None, size, size, 1], tf.uint8, name="image")]
    report = export.export_model(
        export.endpoint_archive(serve, spec, [net.encoder, net.decoder]),
        export.export_folder("sequence", "caption", export_dir), input_names=["image"], output_names=["caption"],
        sample_inputs={"image": images}, version=version, kinds=kinds, check=decoding.greedy_tokens_check(model.end),
        tflite_from=export.TFLiteSource(export.endpoint_archive(greedy_words, spec, [net.encoder, net.decoder]),
                                        ["image"], TOKENS, {"image": images}),
        extra_files={VOCABULARY: json.dumps({"words": model.vocab, "start": model.start, "end": model.end}) + "\n"})
    lite = export.run_tflite(report["tflite"]["float"], {"image": images})["tokens"]
    device_captions = [model.words(row[:list(row).index(model.end)] if model.end in row else row) for row in lite]
    report["captions"] = check_texts(report, model.greedy_batch(images), device_captions, model.end, "captions")
    print_report(report, "captions", f"uint8 images {size}x{size}x1")
    return report
