"""Images made by gradient ascent on the input.

  dream   activation maximization: start from grey noise (or, DeepDream, from
          real images) and climb the gradient of a class score or of a layer
          channel's mean activation (all channels: the mean squared activation,
          as in DeepDream). Each step the image is shifted by a random jitter
          (rolled, and rolled back) and the gradient is normalized by its mean
          magnitude; the image is optimized coarse-to-fine over `octaves`
          scales 1.4 apart (the detail found at one scale is upsampled and
          added to the base image at the next, Mordvintsev et al. 2015).
  invert  reconstruct an image from a layer's activation (Mahendran & Vedaldi
          2015): minimize ||phi(x) - phi(x0)||^2 / ||phi(x0)||^2 + lambda TV_2(x)
          from noise, with the total-variation prior of `losses`.
"""

import os

import keras
import numpy as np
import tensorflow as tf

from apps.visualize import common
from core import plots
from core.errors import UserError
from losses import total_variation_loss

OCTAVE_SCALE = 1.4


def _objective_model(clf, layer, channel, class_name, start=None):
    """(function images -> objective per image, description, number of images to make).
    Class scores: every class from noise, or one class (`class_name`, else the
    prediction) per start image."""
    if layer is None:
        if channel is not None:
            raise UserError("--channel needs --layer (without a layer the class scores are maximized)")
        score_fn = _scores(clf)
        if start is not None:
            classes = common.target_classes(clf, start, class_name)
        elif class_name is None:
            classes = np.arange(len(clf.class_names))
        else:
            classes = common.target_classes(clf, np.zeros((1,)), class_name)
        classes_t = tf.constant(classes, tf.int32)

        def objective(x):
            return tf.gather(score_fn(x), classes_t[:tf.shape(x)[0]], batch_dims=1)

        return objective, [f"class {clf.class_names[c]}" for c in classes], len(classes)
    model = clf.require_keras("activation maximization of a layer")
    probe = _pre_activation_probe(model, common.get_layer(model, layer))
    size = probe.output.shape[-1]
    if channel is not None and not 0 <= channel < size:
        raise UserError(f"layer '{layer}' has {size} channels; --channel must be between 0 and {size - 1}")

    def objective(x):
        a = probe(x, training=False)
        axes = tuple(range(1, len(a.shape) - 1))
        if channel is None:
            return tf.reduce_mean(tf.square(a), axis=tuple(range(1, len(a.shape))))
        return tf.reduce_mean(a[..., channel], axis=axes) if axes else a[..., channel]

    what = f"{layer}" + ("" if channel is None else f"[{channel}]")
    return objective, [what], 1


def _pre_activation_probe(model, layer):
    """Input -> the layer's output before its activation (a ReLU unit that is
    off has zero gradient, so the ascent climbs the pre-activation)."""
    inputs = model.inputs[0]
    activation = getattr(layer, "activation", None)
    if activation is None or activation is keras.activations.linear:
        return keras.Model(inputs, layer.output)
    linear = layer.__class__.from_config({**layer.get_config(), "activation": "linear",
                                          "name": layer.name + "_preactivation"})
    output = linear(layer.input)
    linear.set_weights(layer.get_weights())
    return keras.Model(inputs, output)


def ascend(objective, start, *, steps=60, octaves=3, jitter=2, step_size=4.0, seed=0):
    """Gradient ascent of `objective` (images -> value per image) from `start`
    (N, H, W, C raw pixels); returns the final images."""
    if steps < 1 or octaves < 1:
        raise UserError("--steps and --octaves must be at least 1")
    start = tf.constant(start, tf.float32)
    height, width = start.shape[1:3]
    sizes = [(max(4, round(height / OCTAVE_SCALE ** k)), max(4, round(width / OCTAVE_SCALE ** k)))
             for k in reversed(range(octaves))]
    rng = np.random.default_rng(seed)

    @tf.function
    def step(image, shift):
        with tf.GradientTape() as tape:
            tape.watch(image)
            full = tf.image.resize(image, (height, width), method="bilinear")
            value = tf.reduce_sum(objective(tf.roll(full, shift, axis=(1, 2))))
        grad = tape.gradient(value, image)
        grad /= tf.reduce_mean(tf.abs(grad), axis=(1, 2, 3), keepdims=True) + 1e-8
        return tf.clip_by_value(image + step_size * grad, 0.0, 255.0)

    detail = tf.zeros((start.shape[0], *sizes[0], start.shape[-1]))
    image = start
    for size in sizes:
        base = tf.image.resize(start, size, method="area")
        detail = tf.image.resize(detail, size, method="bilinear")
        image = tf.clip_by_value(base + detail, 0.0, 255.0)
        for _ in range(steps):
            shift = tf.constant(rng.integers(-jitter, jitter + 1, 2), tf.int32) if jitter else tf.zeros(2, tf.int32)
            image = step(image, shift)
        detail = image - base
    return tf.image.resize(image, (height, width), method="bilinear").numpy().clip(0, 255)


def dream(clf, *, layer=None, channel=None, class_name=None, start=None, steps=60, octaves=3, jitter=2,
          step_size=4.0, seed=0, figures=None):
    """Activation maximization (from noise) or DeepDream (from `start` images); writes a PNG."""
    objective, names, count = _objective_model(clf, layer, channel, class_name, start)
    if start is None:
        rng = np.random.default_rng(seed)
        start = (128.0 + rng.normal(0, 8, (count, *clf.image_shape))).clip(0, 255).astype(np.float32)
        mode = "activation maximization from noise"
    else:
        start = np.asarray(start, np.float32)
        names = names if layer is None else names * len(start)
        mode = "DeepDream from test images"
    before = objective(tf.constant(start)).numpy()
    images = ascend(objective, start, steps=steps, octaves=octaves, jitter=jitter, step_size=step_size, seed=seed)
    after = objective(tf.constant(images)).numpy()
    shown = np.concatenate([common.as_rgb(common.to_display(start)), common.as_rgb(common.to_display(images))])
    titles = [f"start: {n}\n{b:.2f}" for n, b in zip(names, before)] + \
             [f"{n}\n{b:.2f} -> {a:.2f}" for n, b, a in zip(names, before, after)]
    what = "class scores" if layer is None else f"'{layer}' pre-activation" + (
        "" if channel is None else f" channel {channel}")
    png = os.path.join(common.figures_dir(figures, clf), f"dream_{'classes' if layer is None else layer}"
                       + ("" if channel is None else f"_{channel}") + ("_deepdream" if mode[0] == "D" else "") + ".png")
    plots.image_grid(shown, titles, png, columns=min(len(start), 10),
                     title=f"{clf.name}: {mode}, {what}, {octaves} octaves x {steps} steps, jitter {jitter}")
    return {"png": png, "images": images, "before": before, "after": after}


def _scores(clf):
    if clf.model is not None:
        scores = common.logits_model(clf.model)
        return lambda x: scores(x, training=False)
    return clf.logits


def invert(clf, layer, x, *, steps=300, tv_weight=None, learning_rate=0.05, seed=0, figures=None):
    """Reconstruct `x` from the activations of `layer`; writes original | reconstruction pairs."""
    model = clf.require_keras("inversion")
    probe = keras.Model(model.inputs[0], common.get_layer(model, layer).output)
    x = np.asarray(x, np.float32)
    target = probe(x, training=False)
    target_norm = tf.reduce_sum(tf.square(target), axis=tuple(range(1, len(target.shape)))) + 1e-8
    pixels = float(np.prod(x.shape[1:]))
    tv_weight = 0.05 if tv_weight is None else tv_weight
    rng = np.random.default_rng(seed)
    image = tf.Variable(rng.uniform(0.4, 0.6, x.shape).astype(np.float32))  # in [0, 1]
    optimizer = keras.optimizers.Adam(learning_rate)

    def losses(v):
        features = probe(v * 255.0, training=False)
        feature_loss = tf.reduce_sum(tf.square(features - target), axis=tuple(range(1, len(target.shape))))
        feature_loss /= target_norm
        tv = total_variation_loss(v, power=2.0) / pixels
        return feature_loss, tv

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            feature_loss, tv = losses(image)
            loss = tf.reduce_sum(feature_loss + tv_weight * tv)
        optimizer.apply_gradients([(tape.gradient(loss, image), image)])
        image.assign(tf.clip_by_value(image, 0.0, 1.0))
        return feature_loss

    start_loss = losses(image)[0].numpy()
    for _ in range(steps):
        step()
    final_loss, _ = losses(image)
    final_loss = final_loss.numpy()
    result = image.numpy() * 255.0
    images, titles = [], []
    for i in range(len(x)):
        images += [common.as_rgb(common.to_display(x[i:i + 1]))[0], common.as_rgb(result[i:i + 1] / 255.0)[0]]
        titles += ["original", f"from '{layer}'\nrel. error {final_loss[i]:.3f}"]
    png = os.path.join(common.figures_dir(figures, clf), f"inversion_{layer}.png")
    plots.image_grid(np.stack(images), titles, png, columns=min(8, len(images)),
                     title=f"{clf.name}: inverting '{layer}' ({steps} Adam steps, TV2 weight {tv_weight})")
    return {"png": png, "images": result, "start_loss": start_loss, "final_loss": final_loss}
