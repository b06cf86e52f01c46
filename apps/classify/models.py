"""The classifier registry: every model by name.

Each builder takes the image shape and the number of classes and returns a
functional Keras model that
  - takes raw pixels in [0, 255] as the input named `images` (the scaling is
    inside the model, so a client of the exported model sends pixels as-is),
  - returns class probabilities as the output named `probabilities`.

GoogLeNet also returns auxiliary classifier outputs (`aux1_probabilities`,
`aux2_probabilities`) for training; `main_head(model)` keeps only
`probabilities`, which is what evaluation and export use.

The CNN zoo is scaled to 28x28 gray and 32x32 colour images: the stems keep
the full resolution (no 7x7/2 ImageNet stem) and the widths are reduced so
each model trains on two CPU cores. Every builder accepts the shared options
  width        multiply every channel count (tiny models for tests: 0.125)
  batchnorm    batch norm on/off where the architecture has it
  dropout      dropout rate before the classifier (None: the model's default)
  dropconnect  a DropConnect hidden layer with this rate before the classifier
"""

import keras
import tensorflow as tf
from keras import layers, ops

from apps.classify.budgets import DEFAULT_MODEL  # noqa: F401  (re-exported: the registry's default)
from core import precision
from core.errors import UserError
from core.registry import Registry
from layers import (
    DenseBlock,
    DropConnect,
    FactorizedInceptionBlock,
    GridReductionBlock,
    InceptionBlock,
    NiNBlock,
    ResidualBlock,
    ResNeXtBlock,
    SeparableConvBlock,
    SqueezeExcitation,
    StochasticDepth,
    TransitionLayer,
)

MODELS = Registry("model")
MAIN_OUTPUT = "probabilities"
OPTIONS = ("width", "batchnorm", "dropout", "dropconnect")


def _inputs(input_shape):
    images = keras.Input(shape=input_shape, name="images")
    return images, layers.Rescaling(1.0 / 255.0, name="scale")(images)


def _ch(channels, width):
    """A channel count scaled by `width` (at least 2)."""
    return max(2, int(round(channels * width)))


def _hidden(x, dropout=0.0, dropconnect=0.0, units=128):
    """The optional regularized layers in front of a classifier."""
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    if dropconnect:
        x = DropConnect(units, rate=dropconnect, activation="relu", name="dropconnect")(x)
    return x


def _classifier(images, features, num_classes, name, dropout=0.0, dropconnect=0.0, extra_outputs=()):
    features = _hidden(features, dropout, dropconnect)
    probabilities = layers.Dense(num_classes, activation="softmax",
                                 dtype=precision.output_dtype(), name=MAIN_OUTPUT)(features)
    outputs = [probabilities, *extra_outputs] if extra_outputs else probabilities
    return keras.Model(images, outputs, name=name)


def _conv_bn(x, filters, kernel, name, strides=1, batchnorm=True, activation="relu"):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=not batchnorm,
                      kernel_initializer="he_normal", name=f"{name}_conv")(x)
    if batchnorm:
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation(activation, name=f"{name}_{activation}")(x) if activation else x


def _stem(x, filters, batchnorm):
    return _conv_bn(x, filters, 3, "stem", batchnorm=batchnorm)


@keras.saving.register_keras_serializable(package="classify")
class LocalResponseNormalization(layers.Layer):
    """Local response normalization across channels (Krizhevsky et al. 2012,
    Sec. 3.3): b_c = a_c / (k + alpha * sum_{|c'-c| <= n/2} a_c'^2)^beta, with
    the paper's k=2, n=5, alpha=1e-4, beta=0.75. (TF op: keras.ops has no LRN;
    it converts to the TFLite LOCAL_RESPONSE_NORMALIZATION builtin.)"""

    def __init__(self, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75, **kwargs):
        super().__init__(**kwargs)
        self.depth_radius, self.bias, self.alpha, self.beta = int(depth_radius), float(bias), float(alpha), float(beta)

    def call(self, inputs):
        # tf.nn.lrn's alpha multiplies the plain sum; the paper's alpha too. TF has LRN kernels for float32
        # and float16 only: under --precision mixed_bfloat16 it runs in float32 and casts back.
        outputs = tf.nn.local_response_normalization(tf.cast(inputs, "float32"), depth_radius=self.depth_radius,
                                                     bias=self.bias, alpha=self.alpha, beta=self.beta)
        return tf.cast(outputs, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(depth_radius=self.depth_radius, bias=self.bias, alpha=self.alpha, beta=self.beta)
        return config


# --------------------------------------------------------------------------
# The classics: MLP, LeNet-5, AlexNet, VGG, Network-in-Network, GoogLeNet.


@MODELS.register("mlp")
def mlp(input_shape, num_classes, hidden=(256, 128), dropout=0.2, dropconnect=0.0, width=1.0, batchnorm=False):
    """Multi-layer perceptron on the flattened pixels (DropConnect replaces
    its hidden Dense layers when `dropconnect` > 0)."""
    images, x = _inputs(input_shape)
    x = layers.Flatten()(x)
    for i, units in enumerate(hidden):
        units = _ch(units, width)
        if dropconnect:
            x = DropConnect(units, rate=dropconnect, activation="relu", name=f"dropconnect{i + 1}")(x)
        else:
            x = layers.Dense(units, activation="relu")(x)
        if batchnorm:
            x = layers.BatchNormalization()(x)
        x = layers.Dropout(dropout or 0.0)(x)
    return _classifier(images, x, num_classes, "mlp")


@MODELS.register("lenet5")
def lenet5(input_shape, num_classes, width=1.0, batchnorm=False, dropout=0.0, dropconnect=0.0):
    """LeNet-5 (LeCun et al., 1998) with ReLU and max-pooling, its common modern form.

    The original reads 32x32 images; smaller ones are zero-padded to 32x32 as
    in the paper's MNIST setup, so the feature maps have the paper's sizes
    (28 -> 14 -> 10 -> 5).
    """
    images, x = _inputs(input_shape)
    height, width_px = input_shape[:2]
    if height < 32 or width_px < 32:
        x = layers.ZeroPadding2D(((max(0, 32 - height) // 2, max(0, 32 - height + 1) // 2),
                                  (max(0, 32 - width_px) // 2, max(0, 32 - width_px + 1) // 2)))(x)
    x = layers.Conv2D(_ch(6, width), 5, activation=None if batchnorm else "relu", name="c1")(x)
    if batchnorm:
        x = layers.Activation("relu")(layers.BatchNormalization(name="c1_bn")(x))
    x = layers.MaxPooling2D(2, name="s2")(x)
    x = layers.Conv2D(_ch(16, width), 5, activation=None if batchnorm else "relu", name="c3")(x)
    if batchnorm:
        x = layers.Activation("relu")(layers.BatchNormalization(name="c3_bn")(x))
    x = layers.MaxPooling2D(2, name="s4")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(_ch(120, width), activation="relu", name="c5")(x)
    x = layers.Dense(_ch(84, width), activation="relu", name="f6")(x)
    return _classifier(images, x, num_classes, "lenet5", dropout or 0.0, dropconnect)


@MODELS.register("alexnet")
def alexnet(input_shape, num_classes, width=1.0, batchnorm=False, dropout=None, dropconnect=0.0):
    """AlexNet-style (Krizhevsky et al. 2012) for small images: five ReLU conv
    layers (5x5, 5x5, then three 3x3), local response normalization after the
    first two, overlapping 3x3/2 max-pooling, two dropout-regularized fully
    connected layers. `batchnorm=True` adds BN after every conv."""
    dropout = 0.5 if dropout is None else dropout
    images, x = _inputs(input_shape)
    for i, (filters, kernel) in enumerate([(64, 5), (128, 5), (192, 3), (192, 3), (128, 3)]):
        x = _conv_bn(x, _ch(filters, width), kernel, f"conv{i + 1}", batchnorm=batchnorm)
        if i < 2:
            x = LocalResponseNormalization(name=f"lrn{i + 1}")(x)
        if i in (0, 1, 4):
            x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"pool{i + 1}")(x)
    x = layers.Flatten()(x)
    for i, units in enumerate([512, 256]):
        x = layers.Dense(_ch(units, width), activation="relu", name=f"fc{i + 1}")(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"fc{i + 1}_dropout")(x)
    return _classifier(images, x, num_classes, "alexnet", 0.0, dropconnect)


@MODELS.register("vgg")
def vgg(input_shape, num_classes, widths=(32, 64, 128), convs_per_stage=2, width=1.0, batchnorm=True,
        dropout=None, dropconnect=0.0):
    """VGG-style (Simonyan & Zisserman 2015): stacks of 3x3 convs (two 3x3
    see what one 5x5 sees, with fewer weights and one more ReLU), 2x2
    max-pooling between stages, a fully connected classifier."""
    dropout = 0.5 if dropout is None else dropout
    images, x = _inputs(input_shape)
    for stage, filters in enumerate(widths):
        for i in range(convs_per_stage):
            x = _conv_bn(x, _ch(filters, width), 3, f"stage{stage + 1}_conv{i + 1}", batchnorm=batchnorm)
        x = layers.MaxPooling2D(2, name=f"stage{stage + 1}_pool")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(_ch(256, width), activation="relu", name="fc1")(x)
    return _classifier(images, x, num_classes, "vgg", dropout, dropconnect)


@MODELS.register("nin")
def nin(input_shape, num_classes, width=1.0, batchnorm=False, dropout=None, dropconnect=0.0):
    """Network-in-Network (Lin et al. 2014): three mlpconv blocks (a conv then
    1x1 convs), dropout between them, and global average pooling of the last
    block's class maps instead of fully connected layers. `batchnorm=True`
    adds BN after each block; `dropconnect` adds a DropConnect layer after the
    pooling (the paper has none)."""
    dropout = 0.5 if dropout is None else dropout
    images, x = _inputs(input_shape)
    for i, (filters, kernel) in enumerate([(96, 5), (128, 5)]):
        f = _ch(filters, width)
        x = NiNBlock(f, kernel_size=kernel, mlp_filters=(f, f), name=f"mlpconv{i + 1}")(x)
        if batchnorm:
            x = layers.BatchNormalization(name=f"mlpconv{i + 1}_bn")(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"pool{i + 1}")(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"dropout{i + 1}")(x)
    f = _ch(128, width)
    if dropconnect:
        x = NiNBlock(f, kernel_size=3, mlp_filters=(f,), name="mlpconv3")(x)
        x = layers.GlobalAveragePooling2D(name="pool")(x)
        return _classifier(images, x, num_classes, "nin", 0.0, dropconnect)
    # The last 1x1 conv has one map per class; no ReLU on it, so the pooled
    # maps are the logits.
    x = NiNBlock(f, kernel_size=3, mlp_filters=(f,), name="mlpconv3")(x)
    x = layers.Conv2D(num_classes, 1, name="class_maps")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    probabilities = layers.Activation("softmax", dtype=precision.output_dtype(), name=MAIN_OUTPUT)(x)
    return keras.Model(images, probabilities, name="nin")


def _aux_classifier(x, num_classes, width, name):
    """GoogLeNet's auxiliary classifier (Szegedy et al. 2015, Sec. 5): 5x5/3
    average pooling, 1x1 conv, a fully connected layer, 70% dropout, softmax."""
    x = layers.AveragePooling2D(5, strides=3, name=f"{name}_pool")(x)
    x = layers.Conv2D(_ch(128, width), 1, activation="relu", name=f"{name}_conv")(x)
    x = layers.Flatten(name=f"{name}_flatten")(x)
    x = layers.Dense(_ch(256, width), activation="relu", name=f"{name}_fc")(x)
    x = layers.Dropout(0.7, name=f"{name}_dropout")(x)
    return layers.Dense(num_classes, activation="softmax",
                        dtype=precision.output_dtype(), name=f"{name}_probabilities")(x)


@MODELS.register("googlenet")
def googlenet(input_shape, num_classes, width=0.25, batchnorm=True, dropout=None, dropconnect=0.0,
              auxiliary=True):
    """GoogLeNet / Inception v1 (Szegedy et al. 2015) for small images: a 3x3
    stem, inception modules 3a-3b, 4a-4e, 5a-5b with the paper's branch
    widths times `width`, max-pooling between the groups, global average
    pooling, 40% dropout, and two auxiliary classifiers after 4a and 4d
    (training only: their loss is added with weight 0.3)."""
    dropout = 0.4 if dropout is None else dropout
    spec = {  # the paper's Table 1: 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj
        "3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
        "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64), "4c": (128, 128, 256, 24, 64, 64),
        "4d": (112, 144, 288, 32, 64, 64), "4e": (256, 160, 320, 32, 128, 128),
        "5a": (256, 160, 320, 32, 128, 128), "5b": (384, 192, 384, 48, 128, 128)}
    images, x = _inputs(input_shape)
    x = _stem(x, _ch(192, width), batchnorm)
    aux = []
    for name in spec:
        if name in ("4a", "5a"):
            x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"pool_before_{name}")(x)
        x = InceptionBlock(*[_ch(f, width) for f in spec[name]], name=f"inception{name}")(x)
        if auxiliary and name in ("4a", "4d"):
            aux.append(_aux_classifier(x, num_classes, width, f"aux{len(aux) + 1}"))
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return _classifier(images, x, num_classes, "googlenet", dropout, dropconnect, extra_outputs=aux)


# --------------------------------------------------------------------------
# Residual networks and their descendants.


def _gap_classifier(images, x, num_classes, name, dropout, dropconnect, final_bn_relu=False, batchnorm=True):
    if final_bn_relu:  # pre-activation nets end with BN-ReLU
        if batchnorm:
            x = layers.BatchNormalization(name="final_bn")(x)
        x = layers.Activation("relu", name="final_relu")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return _classifier(images, x, num_classes, name, dropout or 0.0, dropconnect)


def _stages(x, widths, blocks_per_stage, make_block):
    for stage, filters in enumerate(widths):
        for block in range(blocks_per_stage):
            strides = 2 if stage > 0 and block == 0 else 1
            x = make_block(x, filters, strides, f"stage{stage + 1}_block{block + 1}")
    return x


@MODELS.register("resnet")
def resnet(input_shape, num_classes, widths=(16, 32, 64), blocks_per_stage=1, width=1.0, batchnorm=True,
           dropout=0.0, dropconnect=0.0):
    """A small ResNet (He et al., 2016): a 3x3 stem, then stages of basic
    residual blocks with batch norm, halving the resolution and doubling the
    width from one stage to the next, then global average pooling."""
    images, x = _inputs(input_shape)
    widths = [_ch(w, width) for w in widths]
    x = _stem(x, widths[0], batchnorm)
    x = _stages(x, widths, blocks_per_stage, lambda x, f, s, n: ResidualBlock(
        f, strides=s, use_batchnorm=batchnorm, name=n)(x))
    return _gap_classifier(images, x, num_classes, "resnet", dropout, dropconnect)


@MODELS.register("resnet_bottleneck")
def resnet_bottleneck(input_shape, num_classes, widths=(16, 32, 64), blocks_per_stage=2, width=1.0,
                      batchnorm=True, dropout=0.0, dropconnect=0.0):
    """ResNet with bottleneck blocks (1x1 reduce, 3x3, 1x1 expand to 4x the
    width), as in ResNet-50 and deeper."""
    images, x = _inputs(input_shape)
    widths = [_ch(w, width) for w in widths]
    x = _stem(x, widths[0], batchnorm)
    x = _stages(x, widths, blocks_per_stage, lambda x, f, s, n: ResidualBlock(
        f, strides=s, bottleneck=True, use_batchnorm=batchnorm, name=n)(x))
    return _gap_classifier(images, x, num_classes, "resnet_bottleneck", dropout, dropconnect)


@MODELS.register("resnet_preact")
def resnet_preact(input_shape, num_classes, widths=(16, 32, 64), blocks_per_stage=2, width=1.0, batchnorm=True,
                  dropout=0.0, dropconnect=0.0):
    """Pre-activation ResNet (He et al., "Identity Mappings", 2016): BN-ReLU
    before each conv, a clean identity path, BN-ReLU before the pooling."""
    images, x = _inputs(input_shape)
    widths = [_ch(w, width) for w in widths]
    x = layers.Conv2D(widths[0], 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                      name="stem_conv")(x)
    x = _stages(x, widths, blocks_per_stage, lambda x, f, s, n: ResidualBlock(
        f, strides=s, preactivation=True, use_batchnorm=batchnorm, name=n)(x))
    return _gap_classifier(images, x, num_classes, "resnet_preact", dropout, dropconnect, True, batchnorm)


@MODELS.register("wide_resnet")
def wide_resnet(input_shape, num_classes, depth=10, widen=4, width=1.0, batchnorm=True, dropout=0.0,
                dropconnect=0.0, block_dropout=0.3):
    """Wide ResNet WRN-depth-widen (Zagoruyko & Komodakis 2016): a
    pre-activation ResNet with (depth-4)/6 basic blocks per stage and stage
    widths 16k, 32k, 64k (default WRN-10-4), and dropout `block_dropout`
    between the two convs of every block (the paper's 0.3; `dropout` is the
    one before the classifier)."""
    if (depth - 4) % 6:
        raise UserError(f"wide_resnet depth must be 6n+4 (10, 16, 22, 28, ...), got {depth}")
    images, x = _inputs(input_shape)
    widths = [_ch(16 * widen, width), _ch(32 * widen, width), _ch(64 * widen, width)]
    x = layers.Conv2D(_ch(16, width), 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                      name="stem_conv")(x)
    x = _stages(x, widths, (depth - 4) // 6, lambda x, f, s, n: ResidualBlock(
        f, strides=s, preactivation=True, use_batchnorm=batchnorm, dropout=block_dropout, name=n)(x))
    return _gap_classifier(images, x, num_classes, "wide_resnet", dropout, dropconnect, True, batchnorm)


@MODELS.register("resnext")
def resnext(input_shape, num_classes, widths=(64, 128, 256), cardinality=8, group_widths=(4, 8, 16),
            blocks_per_stage=1, width=0.5, batchnorm=True, dropout=0.0, dropconnect=0.0):
    """ResNeXt (Xie et al. 2017): bottleneck blocks whose 3x3 conv is split
    into `cardinality` groups of `group_width` channels (an aggregated
    transformation); stage output widths `widths` times `width`."""
    images, x = _inputs(input_shape)
    x = _stem(x, _ch(32, width), batchnorm)
    for stage, (filters, group_width) in enumerate(zip(widths, group_widths)):
        for block in range(blocks_per_stage):
            x = ResNeXtBlock(_ch(filters, width), cardinality=cardinality,
                             group_width=max(1, int(round(group_width * width))),
                             strides=2 if stage > 0 and block == 0 else 1, use_batchnorm=batchnorm,
                             name=f"stage{stage + 1}_block{block + 1}")(x)
    return _gap_classifier(images, x, num_classes, "resnext", dropout, dropconnect)


@MODELS.register("densenet")
def densenet(input_shape, num_classes, growth_rate=12, layers_per_block=(4, 4, 4), compression=0.5, width=1.0,
             batchnorm=True, dropout=0.0, dropconnect=0.0):
    """DenseNet-BC (Huang et al. 2017): dense blocks of bottleneck layers (every
    layer sees all earlier maps), transitions that compress the channels by
    `compression` and halve the resolution, BN-ReLU, global average pooling."""
    images, x = _inputs(input_shape)
    growth = _ch(growth_rate, width)
    x = layers.Conv2D(2 * growth, 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                      name="stem_conv")(x)
    for i, n in enumerate(layers_per_block):
        x = DenseBlock(n, growth, bottleneck=True, use_batchnorm=batchnorm, name=f"dense{i + 1}")(x)
        if i < len(layers_per_block) - 1:
            x = TransitionLayer(compression, use_batchnorm=batchnorm, name=f"transition{i + 1}")(x)
    return _gap_classifier(images, x, num_classes, "densenet", dropout, dropconnect, True, batchnorm)


def _residual_branch(block, x, name):
    """F(x) of an identity pre-activation block: the block returns F(x) + x
    with nothing after the addition, so F(x) = block(x) - x exactly."""
    return layers.Subtract(name=f"{name}_residual")([block(x), x])


@MODELS.register("se_resnet")
def se_resnet(input_shape, num_classes, widths=(16, 32, 64), blocks_per_stage=2, ratio=4, width=1.0,
              batchnorm=True, dropout=0.0, dropconnect=0.0):
    """SE-ResNet (Hu et al. 2018) on pre-activation residual blocks: in each
    identity block the residual F(x) is recalibrated by squeeze-and-excitation
    before the addition, y = x + SE(F(x)) (the paper's standard placement);
    in the downsampling blocks, whose shortcut is a projection, the SE
    follows the block (the paper's SE-POST variant)."""
    images, x = _inputs(input_shape)
    widths = [_ch(w, width) for w in widths]
    x = layers.Conv2D(widths[0], 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                      name="stem_conv")(x)

    def block(x, filters, strides, name):
        residual_block = ResidualBlock(filters, strides=strides, preactivation=True, use_batchnorm=batchnorm,
                                       name=name)
        if strides != 1 or x.shape[-1] != filters:
            return SqueezeExcitation(ratio, name=f"{name}_se")(residual_block(x))
        excited = SqueezeExcitation(ratio, name=f"{name}_se")(_residual_branch(residual_block, x, name))
        return layers.Add(name=f"{name}_add")([x, excited])

    x = _stages(x, widths, blocks_per_stage, block)
    return _gap_classifier(images, x, num_classes, "se_resnet", dropout, dropconnect, True, batchnorm)


@MODELS.register("resnet_sd")
def resnet_sd(input_shape, num_classes, widths=(16, 32, 64), blocks_per_stage=3, final_survival=0.5, width=1.0,
              batchnorm=True, dropout=0.0, dropconnect=0.0):
    """ResNet with stochastic depth (Huang et al. 2016) on pre-activation
    blocks: each identity block's residual is kept with probability
    p_l = 1 - l/L (1 - final_survival) (the paper's linear decay, l counting
    the droppable blocks) while training, and scaled by p_l at inference.
    The downsampling blocks are always kept."""
    images, x = _inputs(input_shape)
    widths = [_ch(w, width) for w in widths]
    x = layers.Conv2D(widths[0], 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                      name="stem_conv")(x)
    droppable = len(widths) * blocks_per_stage - (len(widths) - 1)
    count = [0]

    def block(x, filters, strides, name):
        residual_block = ResidualBlock(filters, strides=strides, preactivation=True, use_batchnorm=batchnorm,
                                       name=name)
        if strides != 1 or x.shape[-1] != filters:
            return residual_block(x)
        count[0] += 1
        survival = 1.0 - count[0] / droppable * (1.0 - final_survival)
        return StochasticDepth(survival, name=f"{name}_drop")([x, _residual_branch(residual_block, x, name)])

    x = _stages(x, widths, blocks_per_stage, block)
    return _gap_classifier(images, x, num_classes, "resnet_sd", dropout, dropconnect, True, batchnorm)


# --------------------------------------------------------------------------
# Cheaper convolutions: depthwise-separable (MobileNet) and factorised (Inception v3).


@MODELS.register("mobilenet")
def mobilenet(input_shape, num_classes, stages=((64, 1), (128, 2), (128, 1), (256, 2), (256, 1)), width=1.0,
              batchnorm=True, dropout=0.0, dropconnect=0.0):
    """MobileNet v1 (Howard et al. 2017) for small images: a full 3x3 stem
    conv, then depthwise-separable blocks (filters, stride) -- the paper's
    first six at 28x28 (its stride-2 stem would leave too little image) --
    and global average pooling. `width` is the paper's width multiplier
    alpha: every channel count times alpha, the cost times about alpha^2."""
    images, x = _inputs(input_shape)
    x = _conv_bn(x, _ch(32, width), 3, "stem", batchnorm=batchnorm)
    for i, (filters, strides) in enumerate(stages):
        x = SeparableConvBlock(_ch(filters, width), strides=strides, use_batchnorm=batchnorm,
                               name=f"separable{i + 1}")(x)
    return _gap_classifier(images, x, num_classes, "mobilenet", dropout, dropconnect)


@MODELS.register("inception_v3")
def inception_v3(input_shape, num_classes, width=0.25, batchnorm=True, dropout=None, dropconnect=0.0,
                 asymmetric=3):
    """Inception v3 (Szegedy et al. 2016) for small images: a 3x3 stem, a
    grid reduction (Fig. 10) to 14x14, two Fig. 5 modules (5x5 as two 3x3),
    a grid reduction to 7x7, two Fig. 6 modules (n x n as 1xn -> nx1, with
    n = `asymmetric`: 3 on the 7x7 grid as the paper's 7 on 17x17), global
    average pooling and 20% dropout. Branch widths are the paper's (Keras'
    InceptionV3) times `width`."""
    dropout = 0.2 if dropout is None else dropout
    c = lambda *filters: [_ch(f, width) for f in filters]
    images, x = _inputs(input_shape)
    x = _conv_bn(x, _ch(64, width), 3, "stem", batchnorm=batchnorm)
    x = GridReductionBlock(*c(64, 96, 64, 96), use_batchnorm=batchnorm, name="reduction1")(x)
    for i in range(2):  # the 35x35 modules: 1x1, 1x1 -> 3x3, 1x1 -> 3x3 -> 3x3, pool -> 1x1
        x = FactorizedInceptionBlock(*c(64, 48, 64, 64, 96, 64), use_batchnorm=batchnorm,
                                     name=f"inception_a{i + 1}")(x)
    x = GridReductionBlock(*c(192, 384, 64, 96), use_batchnorm=batchnorm, name="reduction2")(x)
    for i in range(2):  # the 17x17 modules, asymmetric
        x = FactorizedInceptionBlock(*c(192, 128, 192, 128, 192, 192), asymmetric=asymmetric,
                                     use_batchnorm=batchnorm, name=f"inception_b{i + 1}")(x)
    return _gap_classifier(images, x, num_classes, "inception_v3", dropout, dropconnect)


# --------------------------------------------------------------------------


def build_model(name, input_shape, num_classes, **options):
    """Build model `name`; `options` (see the module docstring) that are None
    keep the model's default."""
    builder = MODELS.get(name)
    options = {k: v for k, v in options.items() if v is not None}
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise UserError(f"unknown model option(s): {', '.join(sorted(unknown))}")
    return builder(tuple(input_shape), num_classes, **options)


def main_head(model):
    """The model with only its main `probabilities` output (GoogLeNet's
    auxiliary classifiers are for training only)."""
    if len(model.outputs) == 1:
        return model
    return keras.Model(model.inputs, model.get_layer(MAIN_OUTPUT).output, name=model.name)


def count_params(model):
    return int(sum(int(ops.size(v)) for v in main_head(model).weights if v.trainable))
