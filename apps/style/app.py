"""Neural style transfer (Gatys, Ecker & Bethge 2016) and a fast feed-forward
stylization network for one style (Johnson, Alahi & Fei-Fei 2016).

  transfer  optimize an image (Adam on the pixels, starting from the content
            image) so that its feature Gram matrices match the style image's
            (losses.style_loss), its features at the content layer match the
            content image's (losses.content_loss), plus a total-variation
            prior (losses.total_variation_loss)
  fast      train a small convolutional image-to-image network on crops of
            photos with the same losses, so one forward pass stylizes any
            image; export it as a SavedModel (images -> stylized, pixels in
            [0, 255]) and float / dynamic-range TFLite files, parity-checked.

Images: a file path or the name of a photo in `skimage.data` (offline:
astronaut, chelsea, coffee, rocket, immunohistochemistry, hubble_deep_field,
retina, colorwheel; grey ones - brick, grass, gravel, camera - become RGB).
"""

import json
import os

import keras
import numpy as np
import tensorflow as tf

from apps.style.features import build_extractor
from core import plots, training
from core.errors import UserError
from losses import content_loss, style_loss, total_variation_loss

APP = "style"
DEFAULT_OUT = os.path.join("runs", "style")
DEFAULT_CONTENT = "chelsea"
DEFAULT_STYLE = "immunohistochemistry"
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


DEFAULT_WEIGHTS = {"content": 1.0, "style": 1e5, "tv": 1.0}


def transfer(*, content=DEFAULT_CONTENT, style=DEFAULT_STYLE, size=128, steps=200, learning_rate=4.0,
             features="random", weights_path=None, content_weight=None, style_weight=None, tv_weight=None,
             seed=0, out=DEFAULT_OUT, log_every=50):
    """Gatys et al.: optimize the pixels; writes content | style | result PNGs and returns the loss history."""
    if steps < 1 or size < 16:
        raise UserError("--steps must be at least 1 and --size at least 16")
    keras.utils.set_random_seed(seed)
    extractor = build_extractor(features, weights_path, seed)
    # Square crops of the same size: the Gram matrices then compare with losses.style_loss as they are.
    content_image = center_crop(load_image(content, size), size)
    style_image = center_crop(load_image(style, size), size)
    weights = dict(DEFAULT_WEIGHTS)
    for key, value in (("content", content_weight), ("style", style_weight), ("tv", tv_weight)):
        if value is not None:
            weights[key] = float(value)
    content_features = {n: v for n, v in extractor(tf.constant(content_image[None])).items()}
    style_features = style_targets(extractor, style_image)
    image = tf.Variable(content_image[None].copy())
    optimizer = keras.optimizers.Adam(learning_rate)

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
    training.make_output_dir(out)  # a one-line error when it cannot be written
    result_png = os.path.join(out, f"{name}.png")
    from PIL import Image

    Image.fromarray(result.round().astype(np.uint8)).save(result_png)
    first, last = history[0], history[-1]
    grid_png = plots.image_grid(
        np.stack([content_image, style_image, result]) / 255.0,
        [f"content '{content}'", f"style '{style}'",
         f"result: style loss {first['style']:.3g}->{last['style']:.3g}\ncontent loss {last['content']:.3g}"],
        os.path.join(out, f"{name}_grid.png"), columns=3,
        title=f"Gatys style transfer, {extractor.name} features, {steps} steps")
    with open(os.path.join(out, f"{name}_losses.json"), "w") as f:
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


def build_stylizer(filters=16, residual_blocks=2, image_shape=(None, None, 3)):
    """Conv down x2, residual blocks, transposed-conv up x2 (Johnson et al.'s
    shape, smaller); raw RGB pixels in and out, any size divisible by 4."""
    from keras import layers

    from layers import ResidualBlock

    images = keras.Input(tuple(image_shape), name="images")
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="scale")(images)
    x = layers.Conv2D(filters, 9, padding="same", activation="relu", name="in_conv")(x)
    x = layers.Conv2D(2 * filters, 3, strides=2, padding="same", activation="relu", name="down1")(x)
    x = layers.Conv2D(4 * filters, 3, strides=2, padding="same", activation="relu", name="down2")(x)
    for i in range(residual_blocks):
        x = ResidualBlock(4 * filters, use_batchnorm=False, name=f"res{i + 1}")(x)
    # Transposed convolutions keep static shapes, which the TFLite converter needs
    # (UpSampling2D's repeat loses the height).
    x = layers.Conv2DTranspose(2 * filters, 3, strides=2, padding="same", activation="relu", name="up1")(x)
    x = layers.Conv2DTranspose(filters, 3, strides=2, padding="same", activation="relu", name="up2")(x)
    x = layers.Conv2D(3, 9, padding="same", activation="sigmoid", name="out_conv")(x)
    stylized = layers.Rescaling(255.0, name="stylized")(x)
    return keras.Model(images, stylized, name="fast_stylizer")


def training_crops(count, size, seed=0, photos=("astronaut", "coffee", "rocket", "retina", "colorwheel", "coins",
                                                 "camera", "hubble_deep_field")):
    """Random crops of skimage photos (the content images the stylizer learns on)."""
    rng = np.random.default_rng(seed)
    sources = [load_image(p, size * 2) for p in photos]
    crops = []
    for i in range(count):
        image = sources[i % len(sources)]
        top = rng.integers(0, image.shape[0] - size + 1)
        left = rng.integers(0, image.shape[1] - size + 1)
        crops.append(image[top:top + size, left:left + size])
    return np.stack(crops).astype(np.float32)


def train_fast(*, style=DEFAULT_STYLE, steps=300, size=64, batch_size=4, learning_rate=2e-3, features="random",
               weights_path=None, seed=0, out=DEFAULT_OUT, export_dir="saved_models", export=True,
               content=DEFAULT_CONTENT, style_weight=None, content_weight=None, tv_weight=None, log_every=50,
               tflite_kinds=("float", "dynamic")):
    """Train the stylizer for one style; export it; write a PNG of test stylizations."""
    keras.utils.set_random_seed(seed)
    extractor = build_extractor(features, weights_path, seed)
    style_image = center_crop(load_image(style, size), size)
    style_features = style_targets(extractor, style_image)
    weights = dict(DEFAULT_WEIGHTS)
    for key, value in (("content", content_weight), ("style", style_weight), ("tv", tv_weight)):
        if value is not None:
            weights[key] = float(value)
    crops = training_crops(max(64, batch_size * 16), size, seed)
    net = build_stylizer()
    optimizer = keras.optimizers.Adam(learning_rate)

    @tf.function
    def step(batch):
        content_features = extractor(batch)
        with tf.GradientTape() as tape:
            parts = losses_of(extractor, net(batch, training=True), content_features, style_features, weights)
            total = parts["content"] + parts["style"] + parts["tv"]
        grads = tape.gradient(total, net.trainable_weights)
        optimizer.apply_gradients(zip(grads, net.trainable_weights))
        return total, parts

    rng = np.random.default_rng(seed)
    history = []
    print(f"training a fast stylizer for '{style}' ({extractor.name} features, {steps} steps of {batch_size} "
          f"{size}x{size} crops)")
    for i in range(1, steps + 1):
        batch = tf.constant(crops[rng.integers(0, len(crops), batch_size)])
        total, parts = step(batch)
        if i == 1 or i % log_every == 0 or i == steps:
            history.append({"step": i, **{k: float(v) for k, v in parts.items()}})
            print(f"  step {i:4d}: total {float(total):9.3f}  " + "  ".join(
                f"{k} {float(v):8.3f}" for k, v in parts.items()))
    training.make_output_dir(out)  # a one-line error when it cannot be written
    model_path = os.path.join(out, f"fast_{_stem(style)}_{extractor.name}.keras")
    net.save(model_path)
    test = load_image(content, 128)
    test = center_crop(test, 128)
    stylized = net(test[None]).numpy()[0]
    png = plots.image_grid(np.stack([_fit(style_image, stylized.shape), test, stylized]) / 255.0,
                           [f"style '{style}'", f"content '{content}'", "fast stylizer output"],
                           os.path.join(out, f"fast_{_stem(style)}_{extractor.name}.png"), columns=3,
                           title=f"feed-forward stylizer ({steps} steps), one forward pass")
    result = {"model": net, "model_path": model_path, "png": png, "history": history}
    if export:
        result["export"] = export_stylizer(net, os.path.join(export_dir, APP), test[None], kinds=tflite_kinds)
    print(f"wrote {png}\nwrote {model_path}")
    return result


def export_stylizer(net, app_dir, sample, version=None, kinds=("float", "dynamic")):
    """SavedModel (images -> stylized) and float / dynamic-range TFLite files
    at a fixed 128x128 input, with the largest pixel difference of each."""
    from core import export

    # The same network at a fixed input size (TFLite wants static shapes here).
    fixed_net = build_stylizer(image_shape=sample.shape[1:])
    fixed_net.set_weights(net.get_weights())

    def parity(kind, reference, candidate):
        # Pixels are in [0, 255]: the float file must stay under one grey level
        # everywhere; dynamic-range weights visibly shift colours, so they are measured only.
        difference = export.max_abs_difference(reference, candidate)
        return {"max_abs_diff": difference}, (f"by {difference:.3g} of 255" if kind == "float" and difference > 1.0
                                             else None)

    report = export.export_model(fixed_net, app_dir, input_names=["images"], output_names=["stylized"],
                                 sample_inputs={"images": sample}, version=version, kinds=kinds, check=parity)
    for kind, path in report["tflite"].items():
        print(f"wrote TFLite {path} (max |difference| vs SavedModel {report['max_abs_diff'][kind]:.3g} of 255)")
    saved = report["saved_model"]
    print(f"wrote SavedModel {saved} (serving_default: images -> stylized)")
    return report
