"""The classifier registry: every model by name.

Each builder takes the image shape and the number of classes and returns a
functional Keras model that
  - takes raw pixels in [0, 255] as the input named `images` (the scaling is
    inside the model, so a client of the exported model sends pixels as-is),
  - returns class probabilities as the output named `probabilities`.
"""

import keras
from keras import layers

from core.registry import Registry
from layers import ResidualBlock

MODELS = Registry("model")
DEFAULT_MODEL = "resnet"


def _inputs(input_shape):
    images = keras.Input(shape=input_shape, name="images")
    return images, layers.Rescaling(1.0 / 255.0, name="scale")(images)


def _classifier(images, features, num_classes, name):
    probabilities = layers.Dense(num_classes, activation="softmax", name="probabilities")(features)
    return keras.Model(images, probabilities, name=name)


@MODELS.register("mlp")
def mlp(input_shape, num_classes, hidden=(256, 128), dropout=0.2):
    """Multi-layer perceptron on the flattened pixels."""
    images, x = _inputs(input_shape)
    x = layers.Flatten()(x)
    for units in hidden:
        x = layers.Dense(units, activation="relu")(x)
        x = layers.Dropout(dropout)(x)
    return _classifier(images, x, num_classes, "mlp")


@MODELS.register("lenet5")
def lenet5(input_shape, num_classes):
    """LeNet-5 (LeCun et al., 1998) with ReLU and max-pooling, its common modern form.

    The original reads 32x32 images; smaller ones are zero-padded to 32x32 as
    in the paper's MNIST setup, so the feature maps have the paper's sizes
    (28 -> 14 -> 10 -> 5).
    """
    images, x = _inputs(input_shape)
    height, width = input_shape[:2]
    if height < 32 or width < 32:
        x = layers.ZeroPadding2D(((max(0, 32 - height) // 2, max(0, 32 - height + 1) // 2),
                                  (max(0, 32 - width) // 2, max(0, 32 - width + 1) // 2)))(x)
    x = layers.Conv2D(6, 5, activation="relu", name="c1")(x)
    x = layers.MaxPooling2D(2, name="s2")(x)
    x = layers.Conv2D(16, 5, activation="relu", name="c3")(x)
    x = layers.MaxPooling2D(2, name="s4")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(120, activation="relu", name="c5")(x)
    x = layers.Dense(84, activation="relu", name="f6")(x)
    return _classifier(images, x, num_classes, "lenet5")


@MODELS.register("resnet")
def resnet(input_shape, num_classes, widths=(16, 32, 64), blocks_per_stage=1):
    """A small ResNet (He et al., 2016): a 3x3 stem, then stages of basic
    residual blocks with batch norm, halving the resolution and doubling the
    width from one stage to the next, then global average pooling."""
    images, x = _inputs(input_shape)
    x = layers.Conv2D(widths[0], 3, padding="same", use_bias=False, name="stem_conv")(x)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.Activation("relu", name="stem_relu")(x)
    for stage, filters in enumerate(widths):
        for block in range(blocks_per_stage):
            strides = 2 if stage > 0 and block == 0 else 1
            x = ResidualBlock(filters, strides=strides, name=f"stage{stage + 1}_block{block + 1}")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return _classifier(images, x, num_classes, "resnet")


def build_model(name, input_shape, num_classes):
    return MODELS.get(name)(tuple(input_shape), num_classes)
