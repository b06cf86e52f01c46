"""Character-level language model on the fortunes (many-to-many).

  train     the quotes of every category, joined into one long text, cut into
            `batch_size` parallel streams; batch k holds the k-th window of
            `steps` characters of each stream, so a stateful RNN carries its
            state from one window to the next: truncated backpropagation
            through time over the whole text (states reset at each epoch).
            Stacked RNN layers (the suite's cells or Keras' built-ins),
            gradient-norm clipping (`clipnorm`) against exploding gradients.
  evaluate  validation cross-entropy -> perplexity and bits per character,
            next to the unigram entropy of the training characters.
  generate  greedy, beam search (width k) or temperature sampling after a prompt.
  export    SavedModel whose `serving_default` takes raw prompt strings and
            returns generated strings (vectorization and the decoding loop
            inside); the one-step model (token + states -> logits + states)
            to float and dynamic-range TFLite with builtin ops only, both
            through `core.export.export_model`, parity-checked.
"""

import json
import math
import os

import keras
import numpy as np
import tensorflow as tf

from apps.sequence import data, decoding
from apps.sequence.config import CharLMConfig
from apps.sequence.models import NUM_STATES, char_lm, copy_weights, load_run
from core import distribute, export, precision, results, training
from core.checkpoints import write_json_atomically
from core.cli import run_config
from core.errors import UserError

APP = "sequence"
VOCABULARY = "vocabulary.json"  # the characters by id, in assets.extra/ and next to the TFLite files
PROMPT_PREFIX = "\n\n"  # quotes are separated by blank lines: a prompt starts a quote


# ---------------------------------------------------------------------- data
def corpora(max_chars=None, categories=None):
    fortunes = data.load_fortunes(categories)
    train_text = data.lm_corpus(fortunes, "train", max_chars)
    val_text = data.lm_corpus(fortunes, "val", max_chars and max(max_chars // 8, 20_000))
    return train_text, val_text


def vocabulary(train_text):
    """Characters of the training text by frequency (TextVectorization's order); '' and '[UNK]' first."""
    return data.char_vectorizer([train_text[i:i + 10_000] for i in range(0, len(train_text), 10_000)]
                                ).get_vocabulary()


def make_vectorizer(vocab):
    vectorizer = keras.layers.TextVectorization(standardize=None, split="character", output_mode="int",
                                                vocabulary=vocab[2:], name="char_vectorizer")
    vectorizer(tf.constant(["a"]))  # builds it (an unbuilt layer cannot be exported)
    return vectorizer


def encode(text, vocab):
    index = {ch: i for i, ch in enumerate(vocab)}
    return np.array([index.get(ch, 1) for ch in text], np.int32)


def decode_ids(ids, vocab):
    return "".join(vocab[i] if i > 1 else ("" if i == 0 else "?") for i in ids)


def unigram_entropy(ids, vocab_size):
    """Entropy (nats) of the character frequencies: the loss of a model that ignores context."""
    p = np.bincount(ids, minlength=vocab_size).astype(np.float64)
    p = p[p > 0] / p.sum()
    return float(-(p * np.log(p)).sum())


def tbptt_windows(ids, batch_size, steps):
    """(inputs, targets) arrays of shape (windows, batch, steps): `batch_size`
    contiguous streams, window k of every stream in batch k."""
    per_stream = (len(ids) - 1) // batch_size
    windows = per_stream // steps
    if windows < 1:
        raise UserError(f"text of {len(ids)} characters is too short for {batch_size} streams of {steps} steps")
    usable = windows * steps
    x = np.stack([ids[b * per_stream: b * per_stream + usable] for b in range(batch_size)])
    y = np.stack([ids[b * per_stream + 1: b * per_stream + usable + 1] for b in range(batch_size)])
    return (x.reshape(batch_size, windows, steps).transpose(1, 0, 2),
            y.reshape(batch_size, windows, steps).transpose(1, 0, 2))


def tbptt_dataset(ids, batch_size, steps):
    x, y = tbptt_windows(ids, batch_size, steps)
    return tf.data.Dataset.from_tensor_slices((x, y))  # already batched, in stream order: never shuffle


class ResetStates(keras.callbacks.Callback):
    """Start every epoch and every validation pass from zero states."""

    def _reset(self):
        for layer in self.model.layers:
            if getattr(layer, "stateful", False):
                layer.reset_state()

    def on_epoch_begin(self, epoch, logs=None):
        self._reset()

    def on_test_begin(self, logs=None):
        self._reset()

    def on_test_end(self, logs=None):
        self._reset()


# --------------------------------------------------------------------- train
def refuse_replicas(strategy):
    """One line, before any work: the stateful TBPTT cannot be distributed."""
    raise UserError(f"the char LM cannot train under {strategy}: its stateful RNN carries each text stream's state "
                    f"from one window to the next in variables that a distribution strategy keeps identical on "
                    f"every replica, while each replica reads other streams; use --strategy default")


def train(config: CharLMConfig, *, run, strategy="default"):
    """Truncated BPTT over the whole text (see the module's docstring); the run's config.json records the
    vocabulary and the unigram entropy next to `config`."""
    if strategy in ("mirrored", "multiworker"):
        refuse_replicas(f"--strategy {strategy}")
    c = config
    strategy = distribute.get_strategy(strategy)
    if strategy.num_replicas_in_sync > 1:  # --strategy auto on several GPUs
        refuse_replicas(f"--strategy auto on {strategy.num_replicas_in_sync} devices")
    training.set_seed(c.seed)
    train_text, val_text = corpora(c.max_chars)
    vocab = vocabulary(train_text)
    train_ids, val_ids = encode(train_text, vocab), encode(val_text, vocab)
    with strategy.scope(), precision.policy(c.precision):
        net = char_lm(len(vocab), cell=c.cell, units=c.units, num_layers=c.num_layers, embed_dim=c.embed_dim,
                      dropout=c.dropout, batch_size=c.batch_size, stateful=True)
        net.compile(optimizer=keras.optimizers.Adam(c.learning_rate, clipnorm=c.clipnorm),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=precision.xla(c.jit))
    entropy = unigram_entropy(train_ids, len(vocab))
    training.save_config(run, run_config(c, APP, task="charlm", vocab=vocab, unigram_entropy=entropy),
                         identity_keys=("task", "cell", "units", "num_layers"))
    print(f"training char LM ({c.cell}, {c.num_layers}x{c.units}) on {len(train_text):,} characters "
          f"(vocabulary {len(vocab)}; unigram entropy {entropy:.3f} nats), "
          f"{c.batch_size} streams x {c.steps} steps, clipnorm {c.clipnorm}")
    return training.fit(net, tbptt_dataset(train_ids, c.batch_size, c.steps),
                        tbptt_dataset(val_ids, c.batch_size, c.steps), epochs=c.epochs, run_dir=run,
                        patience=c.patience, extra_callbacks=[ResetStates()])


# ---------------------------------------------------------------- generation
class Generator:
    """A trained LM with explicit states: `step` for the decoders of decoding.py."""

    def __init__(self, out):
        self.config, trained = load_run(out, "charlm", "character language-model")
        config = self.config
        self.vocab = config["vocab"]
        self.model = char_lm(len(self.vocab), cell=config["cell"], units=config["units"],
                             num_layers=config["num_layers"], embed_dim=config["embed_dim"],
                             dropout=config["dropout"], with_state=True)
        copy_weights(trained, self.model, out)
        self.state_shapes = [config["units"]] * (NUM_STATES[config["cell"]] * config["num_layers"])
        self._call = tf.function(lambda inputs: self.model(inputs, training=False), reduce_retracing=True)

    def zero_states(self, batch=1):
        return [np.zeros((batch, u), np.float32) for u in self.state_shapes]

    def run(self, ids, states):
        """ids (batch, time) -> logits of the last step (batch, vocab), new states."""
        outputs = self._call([tf.constant(ids, tf.int32)] + [tf.constant(s) for s in states])
        return outputs[0][:, -1].numpy(), [o.numpy() for o in outputs[1:]]

    def step(self, tokens, states):
        return self.run(np.asarray(tokens, np.int32)[:, None], states)

    def prime(self, prompt):
        """Logits after the prompt (and the quote-start prefix) and the states there."""
        logits, states = self.run(encode(PROMPT_PREFIX + prompt, self.vocab)[None], self.zero_states())
        return logits[0], states

    def generate(self, prompt, length=200, method="greedy", width=4, temperature=1.0, seed=None):
        logits, states = self.prime(prompt)
        if method == "greedy":
            ids = decoding.greedy(self.step, logits, states, length)
        elif method == "beam":
            ids = decoding.beam_search(self.step, logits, states, length, width=width)
        elif method == "sample":
            ids = decoding.sample(self.step, logits, states, length, temperature=temperature, seed=seed)
        else:
            raise UserError(f"unknown decoding method '{method}'; choose greedy, beam or sample")
        return decode_ids(ids, self.vocab)


def loop_period(text, tail=100, max_period=50):
    """The shortest period p <= `max_period` with which the last `tail` characters of `text` repeat
    (text[i] == text[i + p] throughout), or None: greedy and beam decoding of a character LM tend to fall into such a
    cycle ("the prow the prow ..."), sampling does not."""
    end = text[-tail:]
    if len(end) < tail:
        return None
    return next((p for p in range(1, max_period + 1) if end[p:] == end[:-p]), None)


def generate(prompt, *, out, length=200, method="greedy", width=4, temperature=1.0,
             seed=None):
    return Generator(out).generate(prompt, length=length, method=method, width=width, temperature=temperature,
                                   seed=seed)


# ---------------------------------------------------------------- evaluation
def evaluate(*, out, max_chars=None, batch_size=16, steps=200):
    """Validation cross-entropy with states carried over the whole validation text."""
    gen = Generator(out)
    config = gen.config
    _, val_text = corpora(max_chars if max_chars is not None else config.get("max_chars"))
    x, y = tbptt_windows(encode(val_text, gen.vocab), batch_size, steps)
    states, total, count = gen.zero_states(batch_size), 0.0, 0
    for xw, yw in zip(x, y):
        outputs = gen._call([tf.constant(xw)] + [tf.constant(s) for s in states])
        logp = tf.nn.log_softmax(outputs[0], axis=-1).numpy()
        total -= np.take_along_axis(logp, yw[..., None], axis=-1).sum()
        count += yw.size
        states = [o.numpy() for o in outputs[1:]]
    nats = float(total / count)
    report = {"cell": config["cell"], "val_cross_entropy": nats, "perplexity": math.exp(nats),
              "bits_per_char": nats / math.log(2), "unigram_entropy": config["unigram_entropy"],
              "unigram_bits_per_char": config["unigram_entropy"] / math.log(2), "val_characters": int(count)}
    print(f"{config['cell']} ({config['num_layers']}x{config['units']}): validation perplexity "
          f"{report['perplexity']:.2f}, {report['bits_per_char']:.3f} bits/char over {count:,} characters "
          f"(unigram: {report['unigram_bits_per_char']:.3f} bits/char)")
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(report, f, indent=2)
    results.write_results(out, app="sequence", model=f"charlm_{config['cell']}", dataset="fortunes", split="validation",
                          metrics={k: report[k] for k in ("perplexity", "bits_per_char")},
                          baselines={"unigram_bits_per_char": report["unigram_bits_per_char"]},
                          budget=results.budget_of(config), seed=config.get("seed"))
    return report


# -------------------------------------------------------------------- export
def serving_module(gen, length=200):
    """A tf.function: prompts (batch,) string -> greedy continuations (batch,) string."""
    vectorizer = make_vectorizer(gen.vocab)
    vocab_table = tf.constant(gen.vocab[:1] + ["?"] + gen.vocab[2:])  # padding -> "", OOV -> "?"
    model, units = gen.model, gen.state_shapes

    def one(prompt):
        ids = tf.cast(vectorizer(tf.strings.join([PROMPT_PREFIX, prompt])[None]), tf.int32)
        states = [tf.zeros((1, u)) for u in units]
        outputs = model([ids] + states, training=False)
        token = tf.argmax(outputs[0][:, -1], axis=-1, output_type=tf.int32)
        states = list(outputs[1:])
        def body(i, token, generated, *states):
            generated = generated.write(i, token[0])
            outputs = model([token[:, None]] + list(states), training=False)
            token = tf.argmax(outputs[0][:, -1], axis=-1, output_type=tf.int32)
            return (i + 1, token, generated) + tuple(tf.reshape(s, (1, u)) for s, u in zip(outputs[1:], units))

        loop = tf.while_loop(lambda i, *_: i < length, body,
                             (tf.constant(0), token, tf.TensorArray(tf.int32, size=length)) + tuple(states))
        generated = loop[2]
        return tf.strings.reduce_join(tf.gather(vocab_table, generated.stack()))

    def serve(prompt):
        return {"text": tf.map_fn(one, prompt, fn_output_signature=tf.string)}

    return serve, vectorizer


def step_samples(gen, prompts):
    """Inputs of the one-step model after each prompt: its greedy next character and the states there."""
    primed = [gen.prime(p) for p in prompts]
    tokens = np.array([[int(np.argmax(logits))] for logits, _ in primed], np.int32)
    states = [np.concatenate(layer) for layer in zip(*(states for _, states in primed))]
    return tokens, states


def greedy_with_gaps(step, first_logits, states, length):
    """Greedy ids, and at each of them how far the best logit led the second (`decoding.top_two_gap`)."""
    gaps = [decoding.top_two_gap(first_logits)]

    def recording(tokens, states):
        logits, states = step(tokens, states)
        gaps.append(decoding.top_two_gap(logits[0]))
        return logits, states

    return decoding.greedy(recording, first_logits, states, length), gaps


def export_run(*, out, export_dir="saved_models", version=None, length=200,
               prompts=("The computer", "Q: What"), kinds=("float", "dynamic"), check_length=60):
    """Writes saved_models/sequence_charlm/<v>/ (prompt strings -> generated text) and its tflite/<v>/ files (one step:
    tokens + states -> logits + states), through `core.export.export_model`: the served text equals Keras'
    greedy text, and greedy decoding driven by the float TFLite file writes Keras' first `check_length`
    characters (up to a step float rounding could decide). int8.tflite is calibrated on the step's inputs along
    Keras' greedy text and its logits and states must stay within TOLERANCES["int8"] of their scale (its greedy
    text is reported, not enforced)."""
    if "float" not in kinds:
        raise ValueError(f"kinds {kinds} lack 'float', the file the greedy parity check runs")
    gen = Generator(out)
    serve, vectorizer = serving_module(gen, length)
    # TFLite: the one-step model, unrolled (no while loop), builtin ops only.
    step_model = char_lm(len(gen.vocab), cell=gen.config["cell"], units=gen.config["units"],
                         num_layers=gen.config["num_layers"], embed_dim=gen.config["embed_dim"],
                         with_state=True, steps=1, unroll=True)
    step_model.set_weights(gen.model.get_weights())
    names = [t.name.split(":")[0] for t in step_model.inputs]
    state_names = names[1:]
    tokens, states = step_samples(gen, prompts)
    # int8's calibration: the step's inputs along Keras' greedy text (its own characters and states)
    path = gen.generate(prompts[0], length=40)
    calibration = [{"tokens": t, **dict(zip(state_names, s))}
                   for t, s in (step_samples(gen, [path[:n]]) for n in range(4, 41, 4))]
    report = export.export_model(
        export.endpoint_archive(serve, [tf.TensorSpec([None], tf.string, name="prompt")], [gen.model, vectorizer]),
        export.export_folder(APP, "charlm", export_dir), input_names=["prompt"], output_names=["text"],
        sample_inputs={"prompt": np.array(list(prompts))}, version=version, kinds=kinds,
        representative_data=calibration, check=decoding.relative_check(
            enforce=("float", "int8"), relative={"float": decoding.FLOAT_RELATIVE, "int8": export.TOLERANCES["int8"]}),
        extra_files={os.path.join("assets.extra", VOCABULARY): json.dumps(gen.vocab)},
        tflite_from=export.TFLiteSource(step_model, names, ["logits"] + [f"{n}_out" for n in state_names],
                                        {"tokens": tokens, **dict(zip(state_names, states))}))
    served = [s.decode("utf-8") for s in report["saved_model_outputs"]["text"]]
    expected = [gen.generate(p, length=length) for p in prompts]
    if served != expected:
        raise export.ParityError(f"SavedModel generation differs from Keras: {served!r} vs {expected!r}")
    print(f"wrote SavedModel {report['saved_model']} (signature '{export.SIGNATURE}': prompt strings -> text, "
          f"{length} greedy characters)")

    # Greedy generation driven by each TFLite file next to Keras' (the float file's must be the same).
    logits, states = gen.prime(prompts[0])
    keras_ids, gaps = greedy_with_gaps(gen.step, logits, states, check_length)
    tolerance = decoding.FLOAT_RELATIVE * (1.0 + float(np.abs(report["tflite_source_outputs"]["logits"]).max()))
    report["same_characters"] = {}
    for kind, path in report["tflite"].items():
        runner = export.tflite_signature_runner(path)

        def lite_step(tok, st, runner=runner):
            result = runner(tokens=np.asarray(tok, np.int32)[:, None], **dict(zip(state_names, st)))
            return result["logits"][:, -1], [result[f"{n}_out"] for n in state_names]

        lite_ids = decoding.greedy(lite_step, logits, states, check_length)
        compared, problem = decoding.greedy_agreement(keras_ids, lite_ids, gaps, tolerance)
        if kind == "float" and problem:
            raise export.ParityError(f"{path}: TFLite greedy {decode_ids(lite_ids, gen.vocab)!r} vs Keras "
                                     f"{decode_ids(keras_ids, gen.vocab)!r}: {problem}")
        same = next((i for i, (a, b) in enumerate(zip(keras_ids, lite_ids)) if a != b), len(keras_ids))
        report["same_characters"][kind] = same
        print(f"wrote TFLite {path} ({os.path.getsize(path) / 1024:.0f} KiB, one step: tokens + states -> logits + "
              f"states; builtin ops only; max |difference| vs SavedModel {report['max_abs_diff'][kind]:.2g}; "
              f"greedy text the same for {same} of {len(keras_ids)} characters"
              + (f", compared up to an undecided step at {compared})" if compared < len(keras_ids) else ")"))
    write_json_atomically(os.path.join(os.path.dirname(report["tflite"]["float"]), VOCABULARY), gen.vocab)
    report["samples"] = dict(zip(prompts, served))
    return report
