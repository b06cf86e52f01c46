"""Text classification of fortunes (many-to-one): which category is a quote from?

  train     word-level TextVectorization adapted on the training quotes, then
            one of the classifiers of models.py (bag of embeddings, LSTM,
            bidirectional GRU, Transformer encoder) on the word ids.
  evaluate  test accuracy and macro-F1 next to the majority-class baseline,
            per-class precision/recall, a confusion-matrix PNG.
  export    SavedModel whose `serving_default` takes raw quote strings and
            returns class names and probabilities (vectorization inside);
            the word-ids -> probabilities model to float and dynamic-range
            TFLite (builtin ops only; recurrent models unrolled), parity-checked.
"""

import json
import os

import keras
import numpy as np
import tensorflow as tf

from apps.sequence import data
from apps.sequence.config import TextClassConfig
from apps.sequence.models import build_classifier, check_task, copy_weights, load_run
from core import distribute, export, plots, precision, results, training
from core.cli import run_config
from core.data import batched
from core.metrics import classification_report

APP = "sequence"


def make_vectorizer(vocab, sequence_length):
    vectorizer = keras.layers.TextVectorization(output_mode="int", output_sequence_length=sequence_length,
                                                vocabulary=vocab[2:], name="word_vectorizer")
    vectorizer(tf.constant(["a"]))
    return vectorizer


def vectorize(vectorizer, texts):
    return vectorizer(tf.constant(list(texts))).numpy().astype(np.int32)


def training_quotes(c: TextClassConfig):
    """(fortunes, vocabulary, {split: word ids} for train and val): the vocabulary adapted on the training quotes
    only. `train` and bench/textclass_search.py read the quotes through this."""
    fortunes = data.load_fortunes(data.CLASS_CATEGORIES, limit=c.limit)
    vocab = data.word_vectorizer(fortunes.texts("train"), c.max_tokens, c.sequence_length).get_vocabulary()
    vectorizer = make_vectorizer(vocab, c.sequence_length)
    return fortunes, vocab, {split: vectorize(vectorizer, fortunes.texts(split)) for split in ("train", "val")}


def train(config: TextClassConfig, *, run, strategy="default"):
    """One of the classifiers on the word ids of the training quotes; the run's config.json records the
    vocabulary and the class names next to `config`."""
    c = config
    distribution = distribute.get_strategy(strategy)
    training.set_seed(c.seed)
    fortunes, vocab, ids = training_quotes(c)
    train_ds = batched(tf.data.Dataset.from_tensor_slices((ids["train"], fortunes.labels("train"))),
                       c.batch_size, shuffle=True, seed=c.seed, what="the quotes")
    val_ds = batched(tf.data.Dataset.from_tensor_slices((ids["val"], fortunes.labels("val"))), 256,
                     what="the quotes")
    with distribution.scope(), precision.policy(c.precision):
        net = build_classifier(c.model, len(vocab), len(fortunes.categories), c.sequence_length, dropout=c.dropout)
        net.compile(optimizer=keras.optimizers.Adam(c.learning_rate), loss="sparse_categorical_crossentropy",
                    metrics=["accuracy"], jit_compile=precision.xla(c.jit))
    training.save_config(run, run_config(c, APP, task="textclass", class_names=fortunes.categories, vocab=vocab,
                                         strategy=strategy,
                                         replicas=distribution.num_replicas_in_sync),
                         identity_keys=("task", "model"))
    print(f"training {c.model} classifier on {len(fortunes.train)} quotes of {len(fortunes.categories)} categories "
          f"({', '.join(fortunes.categories)}); vocabulary {len(vocab)} words")
    # the batch size is the global one: each of N replicas computes the gradient of batch_size / N quotes
    return training.fit(net, train_ds, val_ds, epochs=c.epochs, run_dir=run, patience=c.patience)


def scores(labels, predictions, num_classes):
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix."""
    report = classification_report(labels, predictions, num_classes)
    return {**report, "accuracy": float(report["accuracy"]), "macro_f1": float(report["f1"].mean())}


def evaluate(*, out, split="test"):
    config, net = load_run(out, "textclass", "text-classification")
    fortunes = data.load_fortunes(data.CLASS_CATEGORIES, limit=config.get("limit"))
    vectorizer = make_vectorizer(config["vocab"], config["sequence_length"])
    labels = fortunes.labels(split)
    predictions = net.predict(vectorize(vectorizer, fortunes.texts(split)), verbose=0).argmax(axis=1)
    k = len(fortunes.categories)
    report = scores(labels, predictions, k)
    majority = int(np.bincount(fortunes.labels("train"), minlength=k).argmax())
    baseline = scores(labels, np.full_like(labels, majority), k)
    report["majority_class"] = fortunes.categories[majority]
    report["majority_accuracy"], report["majority_macro_f1"] = baseline["accuracy"], baseline["macro_f1"]
    print(f"{config['model']}: {split} accuracy {report['accuracy']:.3f}, macro-F1 {report['macro_f1']:.3f} "
          f"({len(labels)} quotes); majority class '{report['majority_class']}': accuracy "
          f"{baseline['accuracy']:.3f}, macro-F1 {baseline['macro_f1']:.3f}")
    for name, p, r, f in zip(fortunes.categories, report["precision"], report["recall"], report["f1"]):
        print(f"  {name:>12} precision {p:.3f} recall {r:.3f} F1 {f:.3f}")
    png = plots.confusion_matrix(report["confusion_matrix"], fortunes.categories,
                                 os.path.join(out, "confusion_matrix.png"),
                                 title=f"{config['model']}: accuracy {report['accuracy']:.3f}, "
                                       f"macro-F1 {report['macro_f1']:.3f}")
    print(f"wrote {png}")
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump({k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in report.items()}, f, indent=2)
    results.write_results(out, app="sequence", model=f"textclass_{config['model']}", dataset="fortunes", split=split,
                          metrics={k: report[k] for k in ("accuracy", "macro_f1")},
                          baselines={k: report[k] for k in ("majority_accuracy", "majority_macro_f1")},
                          budget=results.budget_of(config), seed=config.get("seed"))
    return report


def export_run(*, out, export_dir="saved_models", version=None):
    """Writes saved_models/sequence_textclass_<model>/<v>/ (strings -> class names, probabilities; vectorization in
    the graph) and its TFLite files (word ids -> probabilities, from the unrolled numeric model: string ops would need
    SELECT_TF_OPS; int8 calibrated on the training quotes' int32 ids, its probabilities within TOLERANCES["int8"]),
    atomically through `core.export.export_model`."""
    config = check_task(training.load_config(out), out, "textclass", "text-classification")
    net = training.load_trained_model(out, input_shape=(config["sequence_length"],))
    names, length = config["class_names"], config["sequence_length"]
    vectorizer = make_vectorizer(config["vocab"], length)
    class_table = tf.constant(names)

    def serve(text):
        probabilities = net(tf.cast(vectorizer(text), tf.int32), training=False)
        return {"class_name": tf.gather(class_table, tf.argmax(probabilities, axis=-1)),
                "probabilities": probabilities}

    fortunes = data.load_fortunes(data.CLASS_CATEGORIES, limit=config.get("limit"))
    texts = fortunes.texts("test")[:32]
    ids = vectorize(vectorizer, texts)
    calibration = vectorize(vectorizer, fortunes.texts("train")[:128])  # int8's: training quotes' int32 word ids
    numeric = build_classifier(config["model"], len(config["vocab"]), len(names), length, unroll=True)
    copy_weights(net, numeric, out)  # a model.keras with other layers is a one-line error
    report = export.export_model(
        export.endpoint_archive(serve, [tf.TensorSpec([None], tf.string, name="text")], [net, vectorizer]),
        export.export_folder(APP, f"textclass_{config['model']}", export_dir), input_names=["text"],
        output_names=["class_name", "probabilities"], sample_inputs={"text": np.array(texts, dtype=object)},
        class_names=names, version=version, representative_data=np.array_split(calibration, 4),
        tflite_from=export.TFLiteSource(numeric, ["ids"], ["probabilities"], {"ids": ids}),
        extra_files={os.path.join("assets.extra", "vocabulary.txt"): "\n".join(config["vocab"]) + "\n"})
    served = report["saved_model_outputs"]
    keras_probs = net.predict(ids, verbose=0)
    difference = float(np.abs(served["probabilities"] - keras_probs).max())
    if difference > 1e-5 or [n.decode() for n in served["class_name"]] != [names[i] for i in keras_probs.argmax(1)]:
        raise export.ParityError(f"string SavedModel differs from Keras by {difference:.3g}")
    print(f"wrote SavedModel {report['saved_model']} (signature '{export.SIGNATURE}': text strings -> class_name, "
          f"probabilities)")
    for kind, path in report["tflite"].items():
        print(f"wrote TFLite {path} ({os.path.getsize(path) / 1024:.0f} KiB, word ids -> probabilities, "
              f"max |difference| vs its SavedModel {report['max_abs_diff'][kind]:.2g})")
    report["string_saved_model"] = report["saved_model"]
    return report


def predict(texts, *, out, saved_model=None):
    if saved_model:
        result = export.run_saved_model(saved_model, {"text": np.array(texts, dtype=object)},
                                        outputs=["class_name", "probabilities"], what="a text-classifier export")
        names = [n.decode() for n in result["class_name"]]
        probabilities = result["probabilities"]
    else:
        config = check_task(training.load_config(out), out, "textclass", "text-classification")
        net = training.load_trained_model(out, input_shape=(config["sequence_length"],))
        probabilities = net.predict(vectorize(make_vectorizer(config["vocab"], config["sequence_length"]), texts),
                                    verbose=0)
        names = [config["class_names"][i] for i in probabilities.argmax(1)]
    for text, name, p in zip(texts, names, probabilities):
        print(f"{name} ({p.max():.2f}): {text[:70]!r}")
    return names
