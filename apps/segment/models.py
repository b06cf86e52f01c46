"""The segmentation registry: FCN, SegNet, U-Net and a dilated network by name.

Each builder takes the image shape (S, S, C) and the number of classes K
(background included) and returns a functional Keras model that
  - takes raw pixels in [0, 255] as the input named `images` (the scaling is
    inside the model, so a client of the exported model sends pixels as-is),
  - returns per-pixel class probabilities (N, S, S, K) as `probabilities`.

The encoders downsample three times (S must be a multiple of 8; the dilated
network twice) with 16-32-64 channels (`width` scales them), small enough to
train on two CPU cores.

  fcn     Long et al. 2015 ("FCN-8s" style): a plain conv encoder; class scores
          at 1/8 resolution are upsampled by learned transposed convolutions
          and summed with scores read off the 1/4 and 1/2 feature maps (the
          skip links), then upsampled to full size.
  segnet  Badrinarayanan et al. 2017: the decoder upsamples with the encoder's
          max-pooling indices (MaxUnpooling2D puts each value back where its
          maximum came from) instead of copying feature maps across.
  unet    Ronneberger et al. 2015: a contracting path, a bottleneck, and an
          expanding path of transposed convolutions whose outputs are
          concatenated with the same-resolution encoder features.
  dilated Yu & Koltun 2016 / DeepLab (Chen et al. 2017): a front end that
          pools twice (1/4 resolution), then a context module of dilated 3x3
          convs at rates 1, 2, 4, 8 that keeps the resolution while the
          receptive field grows to 31 feature pixels (124 image pixels:
          plain 3x3 convs would need 15 layers), 1x1 class scores and a
          bilinear 4x upsampling.
"""

import keras
from keras import layers

from core import precision
from core.errors import UserError
from core.registry import Registry
from layers import DilatedConvBlock, MaxPoolingWithArgmax2D, MaxUnpooling2D

MODELS = Registry("model")
OUTPUT = "probabilities"
DOWNSAMPLING = 8  # three 2x2 poolings
CHANNELS = (16, 32, 64)
CONTEXT_RATES = (1, 2, 4, 8)  # the dilated network's context module


def build_model(name, image_shape, num_classes, width=1.0):
    builder = MODELS.get(name)
    size = image_shape[0]
    if image_shape[0] != image_shape[1] or size % DOWNSAMPLING:
        raise UserError(f"{name} needs square images whose side is a multiple of {DOWNSAMPLING}, "
                        f"got {image_shape[0]}x{image_shape[1]}")
    channels = [max(2, int(round(c * width))) for c in CHANNELS]
    return builder(tuple(image_shape), num_classes, channels)


def _inputs(image_shape):
    images = keras.Input(shape=image_shape, name="images")
    return images, layers.Rescaling(1.0 / 255.0, name="scale")(images)


def _conv(x, filters, name, kernel_size=3):
    """3x3 conv -> batch norm -> ReLU, the unit every model here is made of."""
    x = layers.Conv2D(filters, kernel_size, padding="same", use_bias=False, name=f"{name}_conv")(x)
    # momentum 0.9, not Keras' 0.99: runs here are a few hundred steps, and the moving
    # statistics used at inference must have caught up with the weights by then.
    x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _head(x, num_classes):
    """1x1 conv to class scores and a per-pixel softmax."""
    return layers.Conv2D(num_classes, 1, activation="softmax", dtype=precision.output_dtype(), name=OUTPUT)(x)


@MODELS.register("fcn")
def fcn(image_shape, num_classes, channels):
    images, x = _inputs(image_shape)
    skips = []
    for level, filters in enumerate(channels, start=1):
        x = _conv(x, filters, f"enc{level}a")
        x = _conv(x, filters, f"enc{level}b")
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)       # 1/2, 1/4, 1/8
        skips.append(x)
    x = _conv(x, 2 * channels[-1], "fc6")                        # the "fully connected" layers as convs
    x = _conv(x, 2 * channels[-1], "fc7", kernel_size=1)
    scores = layers.Conv2D(num_classes, 1, name="score_pool3")(x)
    # Skip links: upsample the coarse scores 2x and add the scores of the finer pooling layer.
    for level in (2, 1):
        scores = layers.Conv2DTranspose(num_classes, 4, strides=2, padding="same", name=f"upscore_to_pool{level}")(
            scores)
        finer = layers.Conv2D(num_classes, 1, name=f"score_pool{level}")(skips[level - 1])
        scores = layers.Add(name=f"fuse_pool{level}")([scores, finer])
    scores = layers.Conv2DTranspose(num_classes, 4, strides=2, padding="same", name="upscore_full")(scores)
    probabilities = layers.Softmax(dtype=precision.output_dtype(), name=OUTPUT)(scores)
    return keras.Model(images, probabilities, name="fcn")


@MODELS.register("segnet")
def segnet(image_shape, num_classes, channels):
    images, x = _inputs(image_shape)
    indices = []
    for level, filters in enumerate(channels, start=1):
        x = _conv(x, filters, f"enc{level}a")
        x = _conv(x, filters, f"enc{level}b")
        x, where = MaxPoolingWithArgmax2D(2, name=f"pool{level}")(x)
        indices.append(where)
    # The decoder mirrors the encoder; only the pooling indices cross over.
    decoder_channels = list(channels[:-1])[::-1] + [channels[0]]      # 32, 16, 16 for 16-32-64
    for level, filters in zip((3, 2, 1), decoder_channels):
        x = MaxUnpooling2D(2, name=f"unpool{level}")([x, indices[level - 1]])
        x = _conv(x, channels[level - 1], f"dec{level}a")
        x = _conv(x, filters, f"dec{level}b")
    return keras.Model(images, _head(x, num_classes), name="segnet")


@MODELS.register("unet")
def unet(image_shape, num_classes, channels):
    images, x = _inputs(image_shape)
    skips = []
    for level, filters in enumerate(channels, start=1):
        x = _conv(x, filters, f"down{level}a")
        x = _conv(x, filters, f"down{level}b")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = _conv(x, 2 * channels[-1], "bottleneck_a")
    x = _conv(x, 2 * channels[-1], "bottleneck_b")
    for level in (3, 2, 1):
        filters = channels[level - 1]
        x = layers.Conv2DTranspose(filters, 2, strides=2, name=f"up{level}")(x)
        x = layers.Concatenate(name=f"skip{level}")([x, skips[level - 1]])
        x = _conv(x, filters, f"up{level}a")
        x = _conv(x, filters, f"up{level}b")
    return keras.Model(images, _head(x, num_classes), name="unet")


@MODELS.register("dilated")
def dilated(image_shape, num_classes, channels):
    images, x = _inputs(image_shape)
    for level, filters in enumerate(channels[:2], start=1):    # front end: 1/2, then 1/4 resolution
        x = _conv(x, filters, f"front{level}a")
        x = _conv(x, filters, f"front{level}b")
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    # Context: no more pooling, so small objects keep their pixels; the dilation
    # widens what each pixel sees instead (3 -> 7 -> 15 -> 31 feature pixels).
    for rate in CONTEXT_RATES:
        x = DilatedConvBlock(channels[-1], dilation_rate=rate, batchnorm_momentum=0.9, name=f"context_rate{rate}")(x)
    scores = layers.Conv2D(num_classes, 1, name="scores")(x)
    scores = layers.UpSampling2D(4, interpolation="bilinear", name="upsample")(scores)
    probabilities = layers.Softmax(dtype=precision.output_dtype(), name=OUTPUT)(scores)
    return keras.Model(images, probabilities, name="dilated")
