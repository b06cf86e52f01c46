"""What every visualization method needs: a trained classifier, some input
images, a folder for the PNGs, and heat maps turned into pictures.

A classifier comes from either
  - a run folder of `apps.classify` (config.json + model.keras): the Keras
    model, so every method works, including those that look at layers;
  - an exported SavedModel version folder (`saved_models/classify_<model>/<v>/`):
    only its `serving_default` signature (images -> probabilities) exists, so
    the methods that need only the input and the output work (saliency,
    occlusion, adversarial examples, class-score maximization); the others
    say that they need a run folder.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from core import data, plots
from core.errors import UserError

FIGURES = "visualize"  # the PNG folder inside the run folder explained
SAVED_MODEL_FIGURES = os.path.join("runs", "visualize")


@dataclasses.dataclass
class Classifier:
    """A trained classifier: the Keras model when there is one, and a
    differentiable function from raw pixels to class probabilities."""

    name: str
    class_names: list
    image_shape: tuple
    dataset: str
    model: object = None  # keras.Model, or None for a SavedModel
    signature: object = None  # the SavedModel's serving_default function
    run_dir: str = None
    config: dict = None
    saved_model: object = None  # the loaded SavedModel: keeps the signature's variables alive

    def probabilities(self, images, training=False):
        images = tf.convert_to_tensor(images, tf.float32)
        if self.model is not None:
            return self.model(images, training=training)
        return self.signature(images=images)["probabilities"]

    def predict(self, images, batch_size=256):
        return np.concatenate([self.probabilities(images[i:i + batch_size]).numpy()
                               for i in range(0, len(images), batch_size)]) if len(images) else np.zeros((0,))

    def logits(self, images):
        """Class scores before the softmax (log-probabilities for a SavedModel,
        which equal the logits up to a per-example constant)."""
        if self.model is not None:
            return logits_model(self.model)(tf.convert_to_tensor(images, tf.float32), training=False)
        return tf.math.log(tf.maximum(self.probabilities(images), 1e-12))

    def require_keras(self, method):
        if self.model is None:
            raise UserError(f"{method} looks inside the model's layers, which an exported SavedModel does not "
                            f"expose; pass the training run folder (--run runs/classify/<model>) instead")
        return self.model


def load_classifier(path, dataset=None):
    """A run folder (config.json + model.keras) or a SavedModel version folder."""
    from core import export, training

    if not path or not os.path.exists(path):
        raise UserError(f"classifier not found: {path}; pass a run folder of apps.classify (runs/classify/<model>) "
                        f"or an exported version folder (saved_models/classify_<model>/1)")
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        loaded, signature = export.load_signature(path, inputs=["images"], outputs=["probabilities"],
                                                  what="a classifier export")
        image_shape = tuple(signature.structured_input_signature[1]["images"].shape[1:])
        num_classes = signature.structured_outputs["probabilities"].shape[-1]
        class_names = export.read_labels(path) or [str(i) for i in range(num_classes)]
        version = os.path.basename(os.path.normpath(path))
        app = os.path.basename(os.path.dirname(os.path.normpath(path)))
        return Classifier(name=f"{app}-v{version}", class_names=class_names, image_shape=image_shape,
                          dataset=dataset or "fashion_mnist", signature=signature, saved_model=loaded)
    config = training.load_config(path)
    model = load_keras_model(path, input_shape=config.get("image_shape"))
    return Classifier(name=os.path.basename(os.path.normpath(path)) or "run", class_names=list(config["class_names"]),
                      image_shape=tuple(config["image_shape"]), dataset=dataset or config["dataset"], model=model,
                      run_dir=path, config=config)


def load_keras_model(run_dir, input_shape=None):
    """The run's model.keras for inference and gradients (refused in one line when it does not
    take `input_shape`, the images of its config)."""
    import importlib

    from core import training

    for module in ("apps.classify.models", "apps.classify.recipes"):  # register the run's custom objects
        try:
            importlib.import_module(module)
        except ImportError:
            pass
    return training.load_trained_model(run_dir, input_shape=input_shape)


def logits_model(model):
    """The model with the softmax of its last layer removed (class scores y_c),
    sharing the weights; cached on the model."""
    import keras

    cached = getattr(model, "_suite_logits_model", None)
    if cached is not None:
        return cached
    last = model.layers[-1]
    if getattr(last, "activation", None) is not keras.activations.softmax:
        result = model  # already scores (or no softmax to remove)
    else:
        copy = last.__class__.from_config({**last.get_config(), "activation": "linear", "name": last.name + "_logits"})
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        result = keras.Model(inputs, copy(last.input), name=model.name + "_logits")
        copy.set_weights(last.get_weights())
    model.__dict__["_suite_logits_model"] = result  # bypass Keras' attribute tracking: a cache, not state
    return result


def test_examples(clf, count, *, split="test", seed=0):
    """The first `count` images and labels of a split of the classifier's dataset."""
    images = data.load_dataset(clf.dataset, seed=seed, limit=None if count is None else max(count, 1))
    pipeline = {"test": images.test, "train": images.train, "val": images.val}[split]
    if count is not None:
        pipeline = pipeline.take(count)
    pairs = list(pipeline.batch(1024).as_numpy_iterator())
    x = np.concatenate([p[0] for p in pairs]).astype(np.float32)
    y = np.concatenate([p[1] for p in pairs]).astype(np.int64)
    if x.shape[1:] != tuple(clf.image_shape):
        raise UserError(f"dataset {clf.dataset} has images of shape {x.shape[1:]}, the model expects "
                        f"{tuple(clf.image_shape)}; pass --dataset")
    return x, y


def input_images(clf, *, images=None, count=8, seed=0, resize=False):
    """Image files when given (labels unknown: -1), else `count` test images."""
    if images:
        from core.images import read_image

        x = np.stack([read_image(p, clf.image_shape, resize) for p in images]).astype(np.float32)
        return x, np.full(len(x), -1)
    return test_examples(clf, count, seed=seed)


def target_classes(clf, x, class_name=None):
    """The class to explain for each image: `class_name` (name or index) or the prediction."""
    if class_name is None:
        return clf.predict(x).argmax(axis=1)
    if str(class_name) in clf.class_names:
        index = clf.class_names.index(str(class_name))
    elif str(class_name).isdigit() and int(class_name) < len(clf.class_names):
        index = int(class_name)
    else:
        raise UserError(f"unknown class '{class_name}'; choose one of: {', '.join(clf.class_names)}")
    return np.full(len(x), index)


def default_figures(clf):
    """Where a method's PNGs go without --figures: <run>/visualize/ (for a SavedModel, which is not a run:
    runs/visualize/<app>-v<version>/)."""
    return os.path.join(clf.run_dir, FIGURES) if clf.run_dir else os.path.join(SAVED_MODEL_FIGURES, clf.name)


def figures_dir(figures, clf):
    """The folder for the PNGs (--figures DIR, else `default_figures`), made and checked writable."""
    from core import training

    return training.make_output_dir(figures or default_figures(clf))


def get_layer(model, name):
    try:
        return model.get_layer(name)
    except ValueError:
        names = ", ".join(layer.name for layer in model.layers)
        raise UserError(f"no layer named '{name}' in {model.name}; layers: {names}") from None


def last_conv_layer(model):
    """The last layer with a 4-D (batch, height, width, channels) output."""
    for layer in reversed(model.layers):
        shape = getattr(layer, "output", None)
        if shape is not None and len(layer.output.shape) == 4 and layer is not model.layers[0]:
            return layer
    raise UserError(f"{model.name} has no layer with spatial feature maps (Grad-CAM needs a convolutional model)")


def to_display(x):
    """Raw pixels in [0, 255] -> floats in [0, 1] for plotting."""
    return np.clip(np.asarray(x, np.float32) / 255.0, 0.0, 1.0)


def normalize(m, symmetric=False):
    """Scale a map to [0, 1] per example (|m| / max, or m around 0.5 when symmetric)."""
    m = np.asarray(m, np.float64)
    axes = tuple(range(1, m.ndim))
    if symmetric:
        scale = np.max(np.abs(m), axis=axes, keepdims=True)
        return (0.5 + 0.5 * m / np.maximum(scale, 1e-12)).astype(np.float32)
    low = m.min(axis=axes, keepdims=True)
    high = m.max(axis=axes, keepdims=True)
    return ((m - low) / np.maximum(high - low, 1e-12)).astype(np.float32)


def heat(m, cmap="jet"):
    """(N, H, W) maps in [0, 1] -> (N, H, W, 3) RGB colours."""
    import matplotlib

    return matplotlib.colormaps[cmap](np.clip(m, 0, 1))[..., :3].astype(np.float32)


def overlay(images, maps, alpha=0.5):
    """Colour heat maps over the (grey or colour) images in [0, 1]."""
    base = to_display(images)
    if base.shape[-1] == 1:
        base = np.repeat(base, 3, axis=-1)
    return (1 - alpha) * base + alpha * heat(maps)


def as_rgb(images01):
    images01 = np.asarray(images01, np.float32)
    return np.repeat(images01, 3, axis=-1) if images01.shape[-1] == 1 else images01


def rows_grid(columns, column_titles, row_labels, png_path, title):
    """A grid whose rows are examples and whose columns are views of them
    (each column an array (N, H, W, 3) in [0, 1])."""
    n = len(columns[0])
    images, titles = [], []
    for i in range(n):
        for column, name in zip(columns, column_titles):
            images.append(as_rgb(column[i:i + 1])[0])
            titles.append(f"{row_labels[i]}\n{name}" if name == column_titles[0] else name)
    return plots.image_grid(np.stack(images), titles, png_path, columns=len(columns), title=title)


def describe(clf, labels, targets):
    names = clf.class_names
    return [f"{names[t]}" + ("" if label < 0 or label == t else f" (true {names[label]})")
            for label, t in zip(labels, targets)]
