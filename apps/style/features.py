"""Feature extractors for style transfer: image (N, H, W, 3) raw RGB pixels in
[0, 255] -> a dict of named feature maps.

  random  (default, offline) a fixed random-weight CNN: a multi-scale first
          layer (3x3, 5x5, 9x9 filters side by side), then three 3x3 stages
          with average pooling. Random filters already carry texture
          statistics (Ustyuzhaninov et al. 2017, "What does it take to
          generate natural textures?"), and the deeper stages keep the layout
          a content loss needs.
  vgg19   keras.applications.VGG19 with ImageNet weights, the network of Gatys
          et al. (2016): `--weights PATH` to an
          `vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5` file, or
          `--weights imagenet` to download it (needs the network).
"""

import os

import keras
from keras import layers

from core.errors import UserError

VGG_STYLE_LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1")
VGG_CONTENT_LAYERS = ("block4_conv2",)
RANDOM_STYLE_LAYERS = ("multiscale", "stage2", "stage3", "stage4")
RANDOM_CONTENT_LAYERS = ("stage3",)


class Extractor:
    """Callable: images -> {layer name: features}; knows its style and content layers."""

    def __init__(self, model, style_layers, content_layers, preprocess, name):
        self.model, self.style_layers, self.content_layers = model, tuple(style_layers), tuple(content_layers)
        self.preprocess, self.name = preprocess, name

    def __call__(self, images):
        outputs = self.model(self.preprocess(images), training=False)
        return dict(zip(self.model.output_names, outputs))


def random_cnn(seed=0, width=32):
    """The multi-scale random-weight feature network (fully convolutional)."""
    init = lambda k: keras.initializers.HeNormal(seed=seed + k)
    images = keras.Input((None, None, 3), name="images")
    branches = [layers.Conv2D(width, size, padding="same", activation="relu", kernel_initializer=init(i),
                              bias_initializer="zeros", name=f"random_{size}x{size}")(images)
                for i, size in enumerate((3, 5, 9))]
    x = layers.Concatenate(name="multiscale")(branches)
    outputs = {"multiscale": x}
    for stage, filters in enumerate((2 * width, 4 * width, 4 * width), start=2):
        x = layers.AveragePooling2D(2, name=f"pool{stage}")(x)
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", kernel_initializer=init(10 + stage),
                          name=f"stage{stage}")(x)
        outputs[f"stage{stage}"] = x
    model = keras.Model(images, [outputs[n] for n in outputs], name="random_multiscale")
    model.trainable = False
    return model


def build_extractor(kind="random", weights=None, seed=0):
    if kind == "random":
        model = random_cnn(seed)
        # Centre the pixels; the random filters have zero-mean weights.
        return Extractor(model, RANDOM_STYLE_LAYERS, RANDOM_CONTENT_LAYERS, lambda x: x / 127.5 - 1.0, "random")
    if kind == "vgg19":
        if weights is None:
            raise UserError("--features vgg19 needs --weights: the path of the ImageNet notop .h5 file, or "
                            "'imagenet' to download it (network needed); the offline default is --features random")
        if weights != "imagenet" and not os.path.exists(weights):
            raise UserError(f"VGG19 weights not found: {weights}")
        try:
            vgg = keras.applications.VGG19(include_top=False, weights=weights, input_shape=(None, None, 3))
        except Exception as error:  # no network, a foreign file, ...
            raise UserError(f"cannot load VGG19 weights '{weights}': {str(error).splitlines()[0][:200]}; "
                            f"use --features random offline") from None
        names = VGG_STYLE_LAYERS + VGG_CONTENT_LAYERS
        model = keras.Model(vgg.inputs, [vgg.get_layer(n).output for n in names], name="vgg19_features")
        model.trainable = False
        from keras.applications import vgg19

        return Extractor(model, VGG_STYLE_LAYERS, VGG_CONTENT_LAYERS, vgg19.preprocess_input, "vgg19")
    raise UserError(f"unknown feature extractor '{kind}'; choose random or vgg19")
