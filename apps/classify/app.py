"""Image classification: train, evaluate, export and predict.

The story of the app, top to bottom:
  train     load a dataset as tf.data, pick the distribution strategy, build
            and compile the model inside its scope, fit with checkpoints that
            resume after a kill; writes the learning curves.
  evaluate  accuracy and per-class precision/recall on the held-out test split,
            a confusion-matrix PNG and a PNG of sample predictions.
  export    SavedModel for TF Serving + float/dynamic/int8 TFLite files, checked
            against each other on a test batch.
  predict   class probabilities for PNG/JPEG files.
"""

import json
import os

import keras
import numpy as np

from apps.classify.models import MODELS, build_model
from core import data, distribute, export, plots, training
from core.errors import UserError

APP = "classify"


def train(*, model="resnet", dataset="fashion_mnist", epochs=5, batch_size=128, learning_rate=1e-3,
          strategy="auto", out="runs/classify", seed=0, limit=None, val_fraction=0.1, patience=None):
    """Train `model` on `dataset`; `batch_size` is per replica."""
    MODELS.get(model)  # an unknown name fails now, not after loading the data
    strategy = distribute.get_strategy(strategy)  # before any TF work: multi-worker needs that
    training.set_seed(seed)
    images = data.load_dataset(dataset, val_fraction=val_fraction, seed=seed, limit=limit)
    global_batch = distribute.global_batch_size(batch_size, strategy)
    with strategy.scope():
        net = build_model(model, images.image_shape, images.num_classes)
        net.compile(optimizer=keras.optimizers.Adam(learning_rate),
                    loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    config = dict(app=APP, model=model, dataset=dataset, epochs=epochs, batch_size=batch_size,
                  learning_rate=learning_rate, seed=seed, limit=limit, val_fraction=val_fraction,
                  class_names=list(images.class_names), image_shape=list(images.image_shape))
    writes_files = distribute.is_chief(strategy)
    if writes_files:
        training.save_config(out, config, identity_keys=("model", "dataset"))
    print(f"training {model} on {images.name} ({images.num_train} examples, "
          f"{strategy.num_replicas_in_sync} replica(s), global batch {global_batch})")
    training.fit(
        net,
        data.batched(images.train, global_batch, shuffle=True, seed=seed),
        data.batched(images.val, global_batch),
        epochs=epochs, run_dir=out, patience=patience, writes_files=writes_files)
    return net


def _predict_all(net, dataset, batch_size=256):
    labels = np.concatenate([y for _, y in dataset.batch(batch_size).as_numpy_iterator()])
    probabilities = net.predict(data.batched(dataset.map(lambda x, y: x), batch_size, cache=False), verbose=0)
    return labels, probabilities


def classification_report(labels, predictions, num_classes):
    """Confusion matrix, accuracy, and per-class precision and recall."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    true_positives = np.diag(matrix).astype(np.float64)
    precision = true_positives / np.maximum(matrix.sum(axis=0), 1)
    recall = true_positives / np.maximum(matrix.sum(axis=1), 1)
    return {"confusion_matrix": matrix, "accuracy": true_positives.sum() / max(matrix.sum(), 1),
            "precision": precision, "recall": recall}


def evaluate(*, out="runs/classify", limit=None):
    """Evaluate the run's best model on the test split; returns the report."""
    config = training.load_config(out)
    net = training.load_trained_model(out)
    images = data.load_dataset(config["dataset"], val_fraction=config["val_fraction"], seed=config["seed"],
                               limit=limit or config.get("limit"))
    labels, probabilities = _predict_all(net, images.test)
    report = classification_report(labels, probabilities.argmax(axis=1), images.num_classes)

    print(f"test accuracy of {config['model']} on {images.name}: {report['accuracy']:.4f} "
          f"({len(labels)} examples; chance {1 / images.num_classes:.2f})")
    print(f"{'class':>14} {'precision':>9} {'recall':>7}")
    for name, p, r in zip(images.class_names, report["precision"], report["recall"]):
        print(f"{name:>14} {p:9.3f} {r:7.3f}")

    cm_png = plots.confusion_matrix(report["confusion_matrix"], images.class_names,
                                    os.path.join(out, "confusion_matrix.png"),
                                    title=f"{config['model']} on {images.name}: accuracy {report['accuracy']:.3f}")
    samples = np.stack([x for x, _ in images.test.take(32).as_numpy_iterator()])
    sample_labels, sample_probs = labels[:len(samples)], probabilities[:len(samples)]
    titles = [f"{images.class_names[p]}{'' if p == t else ' (' + images.class_names[t] + ')'}"
              for p, t in zip(sample_probs.argmax(axis=1), sample_labels)]
    samples_png = plots.image_grid(samples / 255.0, titles, os.path.join(out, "test_predictions.png"),
                                   title="predicted (true, when wrong)")
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump({"accuracy": report["accuracy"], "num_examples": int(len(labels)),
                   "precision": report["precision"].tolist(), "recall": report["recall"].tolist(),
                   "confusion_matrix": report["confusion_matrix"].tolist()}, f, indent=2)
    print(f"wrote {cm_png}\nwrote {samples_png}")
    return report


def export_run(*, out="runs/classify", export_dir="saved_models", version=None):
    """Export the run's best model to saved_models/classify/<version>/ and TFLite."""
    config = training.load_config(out)
    net = training.load_trained_model(out)
    images = data.load_dataset(config["dataset"], val_fraction=config["val_fraction"], seed=config["seed"],
                               limit=config.get("limit"))
    sample = np.stack([x for x, _ in images.test.take(64).as_numpy_iterator()])
    representative = [x for x, _ in images.train.batch(32).take(8).as_numpy_iterator()]
    report = export.export_model(
        net, os.path.join(export_dir, APP), input_names=["images"], output_names=["probabilities"],
        sample_inputs={"images": sample}, representative_data=representative,
        class_names=config["class_names"], version=version)
    print(f"wrote SavedModel {report['saved_model']} (signature '{export.SIGNATURE}': images -> probabilities)")
    for kind, path in report["tflite"].items():
        print(f"wrote TFLite {path} ({os.path.getsize(path) / 1024:.0f} KiB, "
              f"max |difference| vs SavedModel {report['max_abs_diff'][kind]:.2g})")
    return report


def read_image(path, image_shape, resize=False):
    """Load a PNG/JPEG as raw float pixels of `image_shape` (H, W, C)."""
    from PIL import Image, UnidentifiedImageError

    if not os.path.exists(path):
        raise UserError(f"image not found: {path}")
    try:
        with Image.open(path) as image:
            image = image.convert("L" if image_shape[-1] == 1 else "RGB")
            height, width = image_shape[:2]
            if image.size != (width, height):
                if not resize:
                    raise UserError(f"{path} is {image.size[0]}x{image.size[1]} pixels, the model expects "
                                    f"{width}x{height}; pass --resize to resize it")
                image = image.resize((width, height), Image.BILINEAR)
            pixels = np.asarray(image, dtype=np.float32)
    except (UnidentifiedImageError, OSError) as error:
        raise UserError(f"cannot read image {path}: {error}") from None
    return pixels.reshape(image_shape)


def predict(paths, *, out="runs/classify", saved_model=None, resize=False, top=3):
    """Class probabilities for image files, from the run's model or a SavedModel folder."""
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise UserError(f"image not found: {missing[0]}")
    if saved_model:
        if not os.path.isdir(saved_model):
            raise UserError(f"SavedModel folder not found: {saved_model}")
        labels_file = os.path.join(saved_model, "assets.extra", "labels.txt")
        with open(labels_file) as f:
            class_names = f.read().split("\n")[:-1]
        import tensorflow as tf

        signature = tf.saved_model.load(saved_model).signatures[export.SIGNATURE]
        image_shape = tuple(signature.structured_input_signature[1]["images"].shape[1:])
        run = lambda batch: signature(images=batch)["probabilities"].numpy()  # noqa: E731
    else:
        config = training.load_config(out)
        net = training.load_trained_model(out)
        class_names, image_shape = config["class_names"], tuple(config["image_shape"])
        run = lambda batch: net.predict(batch, verbose=0)  # noqa: E731
    batch = np.stack([read_image(p, image_shape, resize) for p in paths])
    probabilities = run(batch)
    results = []
    for path, probs in zip(paths, probabilities):
        best = np.argsort(probs)[::-1][:top]
        results.append([(class_names[i], float(probs[i])) for i in best])
        print(f"{path}: " + ", ".join(f"{class_names[i]} {probs[i]:.3f}" for i in best))
    return results
