"""Gradient methods: which input pixels does the class score y_c depend on?

  saliency         |dy_c/dx|, the maximum over colour channels (Simonyan et al. 2014)
  deconvnet        backward through each ReLU passes only positive incoming
                   gradient, whatever the forward sign (Zeiler & Fergus 2014)
  guided backprop  backward through each ReLU passes the gradient only where the
                   forward input AND the incoming gradient are positive
                   (Springenberg et al. 2015), via `layers.GuidedReLU`
  Grad-CAM         ReLU(sum_k alpha_k A^k) with alpha_k the spatial mean of
                   dy_c/dA^k on a convolutional layer (Selvaraju et al. 2017);
                   guided Grad-CAM multiplies it with guided backprop

y_c is the class score before the softmax (the model's last Dense layer
without its activation).
"""

import os

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from apps.visualize import common
from core.errors import UserError
from layers import GuidedReLU


@keras.ops.custom_gradient
def deconv_relu(x):
    """Forward ReLU; backward the deconvnet rule: the incoming gradient where it is positive."""

    def grad(*args, upstream=None):
        upstream = args[0] if upstream is None else upstream
        return upstream * ops.cast(upstream > 0, upstream.dtype)

    return ops.relu(x), grad


def _relu_rule(kind):
    if kind == "guided":
        guided = GuidedReLU()
        return lambda x: guided(x)  # a plain function: Keras does not track it as a sublayer
    if kind == "deconvnet":
        return deconv_relu
    raise ValueError(f"unknown ReLU rule {kind!r}")


def modified_relu_model(model, kind):
    """A copy of `model` (same weights) whose ReLUs backpropagate by `kind`
    ("guided" or "deconvnet"); cached on the model. Returns (copy, notes):
    the notes name custom layers whose internal ReLUs keep the plain rule."""
    cache = model.__dict__.setdefault("_suite_relu_models", {})
    if kind in cache:
        return cache[kind]
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    rule = _relu_rule(kind)
    swapped, custom = 0, []
    for layer in copy._flatten_layers(include_self=False, recursive=True):
        if getattr(layer, "activation", None) is keras.activations.relu:
            layer.activation = rule
            swapped += 1
        elif isinstance(layer, keras.layers.ReLU) and layer.get_config().get("max_value") is None \
                and not layer.get_config().get("negative_slope") and not layer.get_config().get("threshold"):
            layer.call = lambda inputs, *args, **kwargs: rule(inputs)
            swapped += 1
        elif not type(layer).__module__.startswith("keras"):
            custom.append(layer.name)
    notes = []
    if custom:
        notes.append(f"custom layers {', '.join(custom[:4])}{'...' if len(custom) > 4 else ''} use ReLUs inside "
                     f"their call; those keep the plain ReLU gradient")
    cache[kind] = (copy, swapped, notes)
    return cache[kind]


def class_score_gradient(model, x, targets):
    """dy_c/dx for each image (y_c the pre-softmax score of class targets[i])."""
    scores_model = common.logits_model(model)
    x = tf.convert_to_tensor(x, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        scores = scores_model(x, training=False)
        chosen = tf.gather(scores, tf.convert_to_tensor(targets, tf.int32), batch_dims=1)
    return tape.gradient(chosen, x).numpy()


def score_gradient(clf, x, targets):
    """dy_c/dx for a Keras model, or d log p_c/dx for a SavedModel (which has no logits)."""
    if clf.model is not None:
        return class_score_gradient(clf.model, x, targets)
    x = tf.convert_to_tensor(x, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        chosen = tf.gather(clf.logits(x), tf.convert_to_tensor(targets, tf.int32), batch_dims=1)
    return tape.gradient(chosen, x).numpy()


def saliency(clf, x, targets):
    """Simonyan et al.: max over channels of |dy_c/dx|, shape (N, H, W)."""
    return np.abs(score_gradient(clf, x, targets)).max(axis=-1)


def modified_gradient(clf, x, targets, kind):
    model = clf.require_keras(f"{kind} backpropagation")
    copy, swapped, notes = modified_relu_model(model, kind)
    if swapped == 0:
        raise UserError(f"{model.name} has no ReLU activations that {kind} backpropagation can change")
    return class_score_gradient(copy, x, targets), notes


def guided_backprop(clf, x, targets):
    return modified_gradient(clf, x, targets, "guided")


def deconvnet(clf, x, targets):
    return modified_gradient(clf, x, targets, "deconvnet")


def grad_cam(clf, x, targets, layer=None):
    """Grad-CAM maps (N, H, W) at the input resolution, and the layer used."""
    model = clf.require_keras("Grad-CAM")
    scores_model = common.logits_model(model)
    layer = common.get_layer(scores_model, layer) if layer else common.last_conv_layer(model)
    if len(layer.output.shape) != 4:
        raise UserError(f"Grad-CAM needs a layer with (height, width, channels) output; '{layer.name}' has "
                        f"{tuple(layer.output.shape)}")
    probe = keras.Model(scores_model.inputs[0], [layer.output, scores_model.output])
    x = tf.convert_to_tensor(x, tf.float32)
    with tf.GradientTape() as tape:
        features, scores = probe(x, training=False)
        chosen = tf.gather(scores, tf.convert_to_tensor(targets, tf.int32), batch_dims=1)
    grads = tape.gradient(chosen, features)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)  # alpha_k
    cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))
    cam = tf.image.resize(cam[..., None], x.shape[1:3], method="bilinear")[..., 0]
    return cam.numpy(), layer.name


def explain(clf, x, labels, *, methods=("saliency", "deconvnet", "guided", "gradcam"), class_name=None,
            layer=None, figures=None):
    """Run the gradient methods on the images and write one PNG per method
    plus `gradients.png` with all of them side by side."""
    targets = common.target_classes(clf, x, class_name)
    rows = common.describe(clf, labels, targets)
    folder = common.figures_dir(figures, clf)
    shown = common.to_display(x)
    columns, names, result, notes = [shown], ["input"], {"targets": targets, "pngs": {}}, []
    for method in methods:
        if method == "saliency":
            m = saliency(clf, x, targets)
            view, label = common.heat(common.normalize(m), "hot"), "saliency |dy/dx|"
        elif method in ("deconvnet", "guided"):
            m, extra = modified_gradient(clf, x, targets, method)
            notes += [n for n in extra if n not in notes]
            view = common.as_rgb(common.normalize(m, symmetric=True))
            label = "deconvnet" if method == "deconvnet" else "guided backprop"
        elif method == "gradcam":
            m, used = grad_cam(clf, x, targets, layer)
            view, label = common.overlay(x, common.normalize(m)), f"Grad-CAM ({used})"
            result["gradcam_layer"] = used
        else:
            raise UserError(f"unknown method '{method}'; choose saliency, deconvnet, guided, gradcam")
        result[method] = m
        png = os.path.join(folder, f"{method}.png")
        common.rows_grid([shown, view], ["input", label], rows, png, f"{clf.name}: {label}")
        result["pngs"][method] = png
        columns.append(view)
        names.append(label)
    if "guided" in result and "gradcam" in result:
        guided_cam = np.abs(result["guided"]).max(axis=-1) * common.normalize(result["gradcam"])
        result["guided_gradcam"] = guided_cam
        columns.append(common.heat(common.normalize(guided_cam), "hot"))
        names.append("guided Grad-CAM")
    if len(methods) > 1:
        png = os.path.join(folder, "gradients.png")
        common.rows_grid(columns, names, rows, png, f"{clf.name}: gradient methods for the predicted class")
        result["pngs"]["all"] = png
    for note in notes:
        print(f"note: {note}")
    result["notes"] = notes
    return result
