"""Pieces shared by the generative models: label one-hot layer, [0, 1] image pipelines."""

import keras
import numpy as np
from keras import layers, ops


@keras.saving.register_keras_serializable(package="generative")
class OneHot(layers.Layer):
    """Integer class labels (batch,) -> one-hot float vectors (batch, num_classes)."""

    def __init__(self, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)

    def call(self, labels):
        return ops.one_hot(ops.cast(ops.reshape(labels, (-1,)), "int32"), self.num_classes, dtype=self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


def label_input(name="labels"):
    return keras.Input(shape=(), dtype="int32", name=name)


def with_label(x, num_classes):
    """A new `labels` input and `x` with the label's one-hot vector appended (conditional models)."""
    labels = label_input()
    return labels, layers.Concatenate()([x, OneHot(num_classes)(labels)])


def to_unit(images, labels):
    """Raw pixels [0, 255] -> [0, 1], the scale every generative model here works in."""
    return images / 255.0, labels


def arrays(dataset, limit=None):
    """(images in [0, 1], labels) as NumPy arrays from an unbatched (image, label) pipeline."""
    if limit:
        dataset = dataset.take(limit)
    xs, ys = [], []
    for x, y in dataset.batch(1024).as_numpy_iterator():
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs).astype(np.float32) / 255.0, np.concatenate(ys).astype(np.int32)
