"""Pieces shared by the generative models: label one-hot layer, [0, 1] image pipelines."""

import keras
import numpy as np
from keras import layers, ops


class AdversarialModel(keras.Model):
    """The shell every adversarial model here shares (GAN, pix2pix, CycleGAN): its own `train_step` steps two
    optimizers, one for the generator side and one for the discriminator side, whose slots are built in
    `compile`, inside the strategy scope, not in a replica context. Subclasses name their variables
    (`generator_variables`, `discriminator_variables`) and keep their loss trackers in `self.trackers`."""

    @property
    def metrics(self):
        return list(self.trackers.values())

    def compile(self, *, g_optimizer, d_optimizer, **kwargs):
        super().compile(**kwargs)
        self.g_optimizer, self.d_optimizer = g_optimizer, d_optimizer
        self.g_optimizer.build(self.generator_variables())
        self.d_optimizer.build(self.discriminator_variables())

    def compile_from_config(self, config):
        pass  # a loaded model is used for sampling or export; `train` compiles a fresh one


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
