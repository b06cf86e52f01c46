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
from apps.sequence.models import CLASSIFIERS, build_classifier, load_run
from core import distribute, export, plots, training
from core.errors import UserError
from core.metrics import classification_report

APP = "sequence"


def make_vectorizer(vocab, sequence_length):
    vectorizer = keras.layers.TextVectorization(output_mode="int", output_sequence_length=sequence_length,
                                                vocabulary=vocab[2:], name="word_vectorizer")
    vectorizer(tf.constant(["a"]))
    return vectorizer


def vectorize(vectorizer, texts):
    return vectorizer(tf.constant(list(texts))).numpy().astype(np.int32)


def train(*, model="bag", epochs=10, batch_size=32, learning_rate=2e-3, sequence_length=128, max_tokens=20000,
          out="runs/sequence/textclass", seed=0, limit=None, patience=None, strategy="default"):
    CLASSIFIERS.get(model)
    strategy = distribute.get_strategy(strategy)
    training.set_seed(seed)
    fortunes = data.load_fortunes(data.CLASS_CATEGORIES, limit=limit)
    vocab = data.word_vectorizer(fortunes.texts("train"), max_tokens, sequence_length).get_vocabulary()
    vectorizer = make_vectorizer(vocab, sequence_length)
    train_ds = tf.data.Dataset.from_tensor_slices((vectorize(vectorizer, fortunes.texts("train")),
                                                   fortunes.labels("train")))
    val_ds = tf.data.Dataset.from_tensor_slices((vectorize(vectorizer, fortunes.texts("val")),
                                                 fortunes.labels("val")))
    with strategy.scope():
        net = build_classifier(model, len(vocab), len(fortunes.categories), sequence_length)
        net.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                    metrics=["accuracy"])
    config = dict(app=APP, task="textclass", model=model, epochs=epochs, batch_size=batch_size,
                  learning_rate=learning_rate, sequence_length=sequence_length, max_tokens=max_tokens, seed=seed,
                  limit=limit, class_names=fortunes.categories, vocab=vocab)
    training.save_config(out, config, identity_keys=("task", "model"))
    print(f"training {model} classifier on {len(fortunes.train)} quotes of {len(fortunes.categories)} categories "
          f"({', '.join(fortunes.categories)}); vocabulary {len(vocab)} words")
    return training.fit(net, train_ds.shuffle(len(fortunes.train), seed=seed).batch(batch_size),
                        val_ds.batch(256), epochs=epochs, run_dir=out, patience=patience)


def scores(labels, predictions, num_classes):
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix."""
    report = classification_report(labels, predictions, num_classes)
    return {**report, "accuracy": float(report["accuracy"]), "macro_f1": float(report["f1"].mean())}


def evaluate(*, out="runs/sequence/textclass", split="test"):
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
    return report


def export_run(*, out="runs/sequence/textclass", export_dir="saved_models", version=None):
    """saved_models/sequence-textclass/<v>/ (strings -> class names) and its TFLite files (word ids)."""
    from apps.sequence.charlm import write_string_saved_model

    config = training.load_config(out)
    net = training.load_trained_model(out, input_shape=(config["sequence_length"],))
    names, length = config["class_names"], config["sequence_length"]
    vectorizer = make_vectorizer(config["vocab"], length)
    class_table = tf.constant(names)

    def serve(text):
        probabilities = net(tf.cast(vectorizer(text), tf.int32), training=False)
        return {"class_name": tf.gather(class_table, tf.argmax(probabilities, axis=-1)),
                "probabilities": probabilities}

    app_dir = os.path.join(export_dir, "sequence-textclass")
    version = int(version or export.next_version(app_dir))
    saved = os.path.join(app_dir, str(version))
    if os.path.exists(saved):
        raise UserError(f"{saved} already exists; choose another --version")
    write_string_saved_model(saved, serve, [tf.TensorSpec([None], tf.string, name="text")], [net, vectorizer])
    os.makedirs(os.path.join(saved, "assets.extra"), exist_ok=True)
    with open(os.path.join(saved, "assets.extra", "labels.txt"), "w") as f:
        f.write("\n".join(names) + "\n")
    fortunes = data.load_fortunes(data.CLASS_CATEGORIES, limit=config.get("limit"))
    texts = fortunes.texts("test")[:32]
    ids = vectorize(vectorizer, texts)
    served = export.run_saved_model(saved, {"text": np.array(texts, dtype=object)})
    keras_probs = net.predict(ids, verbose=0)
    difference = float(np.abs(served["probabilities"] - keras_probs).max())
    if difference > 1e-5 or [n.decode() for n in served["class_name"]] != [names[i] for i in keras_probs.argmax(1)]:
        raise export.ParityError(f"string SavedModel differs from Keras by {difference:.3g}")
    print(f"wrote SavedModel {saved} (signature '{export.SIGNATURE}': text strings -> class_name, probabilities)")

    # TFLite from the numeric model (ids -> probabilities); string ops would need SELECT_TF_OPS.
    numeric = build_classifier(config["model"], len(config["vocab"]), len(names), length, unroll=True)
    numeric.set_weights(net.get_weights())
    report = export.export_model(numeric, os.path.join(app_dir, "ids"), input_names=["ids"],
                                 output_names=["probabilities"], sample_inputs={"ids": ids}, version=version)
    vocab_file = os.path.join(app_dir, "ids", str(version), "assets.extra", "vocabulary.txt")
    os.makedirs(os.path.dirname(vocab_file), exist_ok=True)
    with open(vocab_file, "w") as f:
        f.write("\n".join(config["vocab"]) + "\n")
    for kind, path in report["tflite"].items():
        print(f"wrote TFLite {path} ({os.path.getsize(path) / 1024:.0f} KiB, word ids -> probabilities, "
              f"max |difference| vs SavedModel {report['max_abs_diff'][kind]:.2g})")
    report["string_saved_model"] = saved
    return report


def predict(texts, *, out="runs/sequence/textclass", saved_model=None):
    if saved_model:
        result = export.run_saved_model(saved_model, {"text": np.array(texts, dtype=object)},
                                        outputs=["class_name", "probabilities"], what="a text-classifier export")
        names = [n.decode() for n in result["class_name"]]
        probabilities = result["probabilities"]
    else:
        config = training.load_config(out)
        net = training.load_trained_model(out, input_shape=(config["sequence_length"],))
        probabilities = net.predict(vectorize(make_vectorizer(config["vocab"], config["sequence_length"]), texts),
                                    verbose=0)
        names = [config["class_names"][i] for i in probabilities.argmax(1)]
    for text, name, p in zip(texts, names, probabilities):
        print(f"{name} ({p.max():.2f}): {text[:70]!r}")
    return names
