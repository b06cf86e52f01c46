"""Neural style transfer (Gatys, Ecker & Bethge 2016) and a fast feed-forward
stylization network for one style (Johnson, Alahi & Fei-Fei 2016).

  transfer  optimize an image (Adam on the pixels, starting from the content
            image) so that its feature Gram matrices match the style image's
            (losses.style_loss), its features at the content layer match the
            content image's (losses.content_loss), plus a total-variation
            prior (losses.total_variation_loss)
  stylizer  (apps/style/stylizer.py) a small convolutional image-to-image
            network trained on crops of photos with the same losses, so one
            forward pass stylizes any image; its network is `build_stylizer`.

Images: a file path or the name of a photo in `skimage.data` (offline:
astronaut, chelsea, coffee, rocket, immunohistochemistry, hubble_deep_field,
retina, colorwheel; grey ones - brick, grass, gravel, camera - become RGB).
"""

import json
import os

import keras
import numpy as np
import tensorflow as tf

from apps.style.config import LossConfig, TransferConfig
from apps.style.features import build_extractor
from core import plots, precision, training
from core.errors import UserError
from losses import content_loss, style_loss, total_variation_loss

APP = "style"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina",
          "colorwheel", "brick", "grass", "gravel", "camera", "coins")


def load_image(name_or_path, size):
    """RGB float pixels in [0, 255] whose shorter side is `size`."""
    if os.path.exists(name_or_path):
        from PIL import Image, UnidentifiedImageError

        from core.images import check_finite_pixels  # a float image with NaN: refused, not stylized

        try:
            with Image.open(name_or_path) as image:
                pixels = np.asarray(check_finite_pixels(image, name_or_path).convert("RGB"), np.float32)
        except (UnidentifiedImageError, OSError) as error:
            raise UserError(f"cannot read image {name_or_path}: {error}") from None
    elif name_or_path in PHOTOS:
        import skimage.data

        pixels = np.asarray(getattr(skimage.data, name_or_path)(), np.float32)
    else:
        raise UserError(f"image not found: {name_or_path} (a file, or one of skimage.data's photos: "
                        f"{', '.join(PHOTOS)})")
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=-1)
    pixels = pixels[..., :3]
    if pixels.max() <= 1.0:
        pixels = pixels * 255.0
    height, width = pixels.shape[:2]
    scale = size / min(height, width)
    new = (max(8, int(round(height * scale))), max(8, int(round(width * scale))))
    return tf.image.resize(pixels, new, method="area", antialias=True).numpy().clip(0, 255)


def center_crop(image, size):
    height, width = image.shape[:2]
    top, left = (height - size) // 2, (width - size) // 2
    return image[top:top + size, left:left + size]


def style_targets(extractor, style):
    features = extractor(tf.constant(style[None], tf.float32))
    return {n: features[n] for n in extractor.style_layers}


def losses_of(extractor, images, content_features, style_features, weights):
    """Weighted content, style and TV losses (scalars, means over the batch).
    The content loss is divided by the feature size and the style loss
    averaged over the style layers, so the default weights suit any extractor."""
    features = extractor(images)
    content = tf.add_n([tf.reduce_mean(content_loss(content_features[n], features[n]))
                        / float(np.prod(features[n].shape[1:]))
                        for n in extractor.content_layers])
    style = tf.add_n([tf.reduce_mean(style_loss(tf.broadcast_to(style_features[n], tf.shape(features[n])),
                                                features[n]))
                      for n in extractor.style_layers]) / len(extractor.style_layers)
    tv = tf.reduce_mean(total_variation_loss(images / 255.0)) / float(np.prod(images.shape[1:]))
    return {"content": weights["content"] * content, "style": weights["style"] * style, "tv": weights["tv"] * tv}


def loss_weights(config):
    """The weights of the three losses, from a `LossConfig`."""
    return {"content": config.content_weight, "style": config.style_weight, "tv": config.tv_weight}


DEFAULT_WEIGHTS = loss_weights(LossConfig())


def transfer(config: TransferConfig, *, run, log_every=50):
    """Gatys et al.: optimize the pixels; writes content | style | result PNGs and returns the loss history."""
    c = config
    content, style, steps = c.content, c.style, c.steps
    training.make_output_dir(run)  # before minutes of optimisation, not after
    keras.utils.set_random_seed(c.seed)
    extractor = build_extractor(c.features, c.weights, c.seed)
    # Square crops of the same size: the Gram matrices then compare with losses.style_loss as they are.
    content_image = center_crop(load_image(content, c.size), c.size)
    style_image = center_crop(load_image(style, c.size), c.size)
    weights = loss_weights(c)
    content_features = {n: v for n, v in extractor(tf.constant(content_image[None])).items()}
    style_features = style_targets(extractor, style_image)
    image = tf.Variable(content_image[None].copy())
    optimizer = keras.optimizers.Adam(c.learning_rate)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            parts = losses_of(extractor, image, content_features, style_features, weights)
            total = parts["content"] + parts["style"] + parts["tv"]
        optimizer.apply_gradients([(tape.gradient(total, image), image)])
        image.assign(tf.clip_by_value(image, 0.0, 255.0))
        return total, parts

    history = []
    start = losses_of(extractor, image, content_features, style_features, weights)
    history.append({k: float(v) for k, v in start.items()})
    print(f"style transfer: content '{content}' {content_image.shape[1]}x{content_image.shape[0]}, style '{style}', "
          f"{extractor.name} features, {steps} Adam steps")
    for i in range(1, steps + 1):
        total, parts = step()
        if i % log_every == 0 or i == steps:
            history.append({k: float(v) for k, v in parts.items()})
            print(f"  step {i:4d}: total {float(total):10.3f}  " + "  ".join(
                f"{k} {float(v):9.3f}" for k, v in parts.items()))
    result = image.numpy()[0]
    name = f"{_stem(content)}_{_stem(style)}_{extractor.name}"
    result_png = os.path.join(run, f"{name}.png")
    from PIL import Image

    Image.fromarray(result.round().astype(np.uint8)).save(result_png)
    first, last = history[0], history[-1]
    grid_png = plots.image_grid(
        np.stack([content_image, style_image, result]) / 255.0,
        [f"content '{content}'", f"style '{style}'",
         f"result: style loss {first['style']:.3g}->{last['style']:.3g}\ncontent loss {last['content']:.3g}"],
        os.path.join(run, f"{name}_grid.png"), columns=3,
        title=f"Gatys style transfer, {extractor.name} features, {steps} steps")
    with open(os.path.join(run, f"{name}_losses.json"), "w") as f:
        json.dump(history, f, indent=2)
    print(f"wrote {grid_png}\nwrote {result_png}")
    return {"image": result, "history": history, "png": grid_png, "result_png": result_png,
            "content_image": content_image, "style_image": style_image}


def _stem(name):
    return os.path.splitext(os.path.basename(name))[0]


def _fit(image, shape):
    return tf.image.resize(image, shape[:2], method="area").numpy()


# --------------------------------------------------------------------------
# Fast feed-forward stylization (Johnson et al. 2016).


@keras.saving.register_keras_serializable(package="style")
class DepthToSpace(keras.layers.Layer):
    """Each pixel's channels become a `block_size` x `block_size` patch of pixels with a quarter (for 2) of the
    channels: after a convolution, sub-pixel upsampling (Shi et al. 2016)."""

    def __init__(self, block_size=2, **kwargs):
        super().__init__(**kwargs)
        self.block_size = block_size

    def call(self, inputs):
        return keras.ops.depth_to_space(inputs, self.block_size)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        b = self.block_size
        return (batch, None if height is None else height * b, None if width is None else width * b,
                channels // (b * b))

    def get_config(self):
        return {**super().get_config(), "block_size": self.block_size}


def build_stylizer(filters=16, residual_blocks=2, image_shape=(None, None, 3), upsampling="transposed"):
    """Conv down x2, residual blocks, transposed-conv up x2 (Johnson et al.'s
    shape, smaller); raw RGB pixels in and out, any size divisible by 4.

    upsampling="subpixel" builds the same function for deployment (`subpixel_twin`): each transposed
    convolution as a convolution on the coarse grid followed by DepthToSpace."""
    from keras import layers

    from layers import ResidualBlock

    images = keras.Input(tuple(image_shape), name="images")
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="scale")(images)
    x = layers.Conv2D(filters, 9, padding="same", activation="relu", name="in_conv")(x)
    x = layers.Conv2D(2 * filters, 3, strides=2, padding="same", activation="relu", name="down1")(x)
    x = layers.Conv2D(4 * filters, 3, strides=2, padding="same", activation="relu", name="down2")(x)
    for i in range(residual_blocks):
        x = ResidualBlock(4 * filters, use_batchnorm=False, name=f"res{i + 1}")(x)
    if upsampling == "transposed":
        # Transposed convolutions keep static shapes, which the TFLite converter needs
        # (UpSampling2D's repeat loses the height).
        x = layers.Conv2DTranspose(2 * filters, 3, strides=2, padding="same", activation="relu", name="up1")(x)
        x = layers.Conv2DTranspose(filters, 3, strides=2, padding="same", activation="relu", name="up2")(x)
    elif upsampling == "subpixel":
        for name, channels in (("up1", 2 * filters), ("up2", filters)):
            x = layers.Conv2D(4 * channels, 3, padding="same", activation="relu", name=name)(x)
            x = DepthToSpace(2, name=f"{name}_to_space")(x)
    else:
        raise ValueError(f"upsampling must be 'transposed' or 'subpixel', not {upsampling!r}")
    x = layers.Conv2D(3, 9, padding="same", activation="sigmoid", name="out_conv")(x)
    stylized = layers.Rescaling(255.0, name="stylized", dtype=precision.output_dtype())(x)
    return keras.Model(images, stylized, name="fast_stylizer")


def subpixel_kernel(kernel, bias):
    """A stride-2 "same" transposed convolution (Keras kernel (3, 3, out, in)) as the weights of a 3x3 "same"
    convolution on the coarse grid whose 4 x out channels DepthToSpace(2) spreads into 2x2 blocks.

    The transposed convolution adds x[i] * K[k] to y[2i + k] (k = 0, 1, 2; TensorFlow pads its stride-2 "same"
    case after, not before). So the fine pixel 2i + a reads, for a = 0, x[i] through K[0] and x[i - 1] through
    K[2], and for a = 1, x[i] through K[1] (`taps` below, per axis): in the coarse convolution, the tap of offset
    d (index d + 1) of sub-pixel a holds K[taps[a][d]]; the tap of offset +1 stays zero."""
    taps = {0: {0: 0, -1: 2}, 1: {0: 1}}  # sub-pixel a -> {coarse offset d: transposed kernel index k}
    height, width, out, channels = kernel.shape
    if (height, width) != (3, 3):
        raise ValueError(f"expected a 3x3 transposed kernel, got {height}x{width}")
    weights = np.zeros((3, 3, channels, 4 * out), kernel.dtype)
    for a, rows in taps.items():
        for b, cols in taps.items():
            block = slice((2 * a + b) * out, (2 * a + b + 1) * out)  # DepthToSpace's order: block row, column, channel
            for dy, ky in rows.items():
                for dx, kx in cols.items():
                    weights[dy + 1, dx + 1, :, block] = kernel[ky, kx].T
    return weights, np.tile(bias, 4)


def subpixel_twin(net, image_shape):
    """`net` (a transposed-convolution stylizer) rebuilt with sub-pixel upsampling at `image_shape`: the same
    function up to float rounding. Exported stylizers use it: a TRANSPOSE_CONV's output shape is computed from
    its input's at run time (the batch is unknown), and XNNPACK, LiteRT's CPU delegate, leaves such an op to the
    builtin kernels, slower still in the dynamic-range file; DEPTH_TO_SPACE needs no shape."""
    twin = build_stylizer(image_shape=image_shape, upsampling="subpixel")
    for layer in twin.layers:
        if not layer.weights:
            continue
        weights = net.get_layer(layer.name).get_weights()
        layer.set_weights(list(subpixel_kernel(*weights)) if layer.name in ("up1", "up2") else weights)
    return twin
