"""Looking at a trained network directly: its architecture, its training
curves, its first-layer kernels, the activation maps of a layer, occlusion
sensitivity (Zeiler & Fergus 2014) and the dataset images that excite a
channel most."""

import io
import os

import numpy as np

from apps.visualize import common
from core import plots
from core.errors import UserError


def architecture(clf, figures=None, renderer="auto"):
    """A block diagram (keras.utils.plot_model: graphviz + pydot), or, when
    those are missing or `renderer="text"`, the text summary as a PNG and a .txt."""
    import keras

    model = clf.require_keras("the architecture diagram")
    folder = common.figures_dir(figures, clf)
    png = os.path.join(folder, "architecture.png")
    reason = "text summary requested"
    if renderer in ("auto", "graphviz"):
        try:
            keras.utils.plot_model(model, to_file=png, show_shapes=True, show_layer_names=True,
                                   show_layer_activations=True, expand_nested=True, dpi=90)
            return {"png": png, "renderer": "graphviz"}
        except (ImportError, OSError, FileNotFoundError) as error:
            reason = str(error).splitlines()[0][:160] or type(error).__name__
            if renderer == "graphviz":
                raise UserError(f"cannot draw the diagram with graphviz: {reason}; install the Debian package "
                                f"'graphviz' and the Python package 'pydot'") from None
    buffer = io.StringIO()
    model.summary(print_fn=lambda line, *args, **kwargs: buffer.write(line + "\n"), line_length=100)
    text = buffer.getvalue()
    txt = os.path.join(folder, "architecture.txt")
    with open(txt, "w") as f:
        f.write(text)
    import matplotlib.pyplot as plt

    lines = text.splitlines()
    fig = plt.figure(figsize=(11, 0.17 * len(lines) + 0.8))
    fig.text(0.01, 0.99, text, family="monospace", fontsize=7, va="top")
    fig.suptitle(f"{model.name}: text summary (graphviz diagram unavailable: {reason})", fontsize=8)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    print(f"note: no block diagram ({reason}); wrote the text summary instead. "
          f"For the diagram install graphviz (apt-get install graphviz) and pydot (pip install pydot).")
    return {"png": png, "txt": txt, "renderer": "text"}


def curves(clf, figures=None):
    """Training curves from the run's history.csv (via core.plots.learning_curves)."""
    if clf.run_dir is None or not os.path.exists(os.path.join(clf.run_dir, "history.csv")):
        raise UserError("training curves need the run folder's history.csv (a SavedModel export has no history); "
                        "pass --run with the training run folder")
    png = os.path.join(common.figures_dir(figures, clf), "training_curves.png")
    plots.learning_curves(os.path.join(clf.run_dir, "history.csv"), png,
                          title=f"{clf.name}: {clf.config.get('model')} on {clf.config.get('dataset')}")
    return {"png": png}


def first_conv_layer(model):
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is not None and len(kernel.shape) == 4:
            return layer
    raise UserError(f"{model.name} has no convolution layer, so no kernels to show")


def kernels(clf, figures=None):
    """The learned filters of the first convolution: one image per output
    channel (RGB when it reads 3 channels, grey otherwise, the mean over
    its inputs beyond that), each scaled to its own range."""
    layer = first_conv_layer(clf.require_keras("the kernel view"))
    w = np.asarray(layer.kernel.numpy())  # (kh, kw, in, out)
    images = np.moveaxis(w, -1, 0)  # (out, kh, kw, in)
    if images.shape[-1] not in (1, 3):
        images = images.mean(axis=-1, keepdims=True)
    images = common.normalize(images)
    titles = [f"{layer.name}[{i}] |w|={np.abs(w[..., i]).sum():.2f}" for i in range(len(images))]
    png = os.path.join(common.figures_dir(figures, clf), f"kernels_{layer.name}.png")
    plots.image_grid(images, titles, png, columns=min(8, len(images)),
                     title=f"{clf.name}: {w.shape[0]}x{w.shape[1]} kernels of '{layer.name}' ({w.shape[-1]} filters)")
    return {"png": png, "layer": layer.name, "kernels": w}


def layer_outputs(model, layer_names):
    """A model from the input to the named layers' outputs."""
    import keras

    outputs = [common.get_layer(model, name).output for name in layer_names]
    return keras.Model(model.inputs[0] if len(model.inputs) == 1 else model.inputs, outputs)


def activations(clf, layer, x, labels=None, figures=None, max_channels=32):
    """Feature maps of `layer` for one image: a grid of channels."""
    model = clf.require_keras("activation maps")
    maps = layer_outputs(model, [layer])(x[:1], training=False)
    maps = np.asarray(maps)[0]
    if maps.ndim != 3:
        raise UserError(f"layer '{layer}' has output shape {maps.shape}; activation maps need a convolutional "
                        f"layer with (height, width, channels) output")
    channels = min(max_channels, maps.shape[-1])
    images = [common.as_rgb(common.to_display(x[:1]))[0]]
    titles = ["input"]
    for c in range(channels):
        m = maps[..., c]
        images.append(common.heat(common.normalize(m[None]), cmap="viridis")[0])
        titles.append(f"ch {c} max {m.max():.2f}")
    images = [_resize(i, maps.shape[:2]) for i in images]
    png = os.path.join(common.figures_dir(figures, clf), f"activations_{layer}.png")
    plots.image_grid(np.stack(images), titles, png, columns=min(9, len(images)),
                     title=f"{clf.name}: activations of '{layer}' {maps.shape} (each scaled to its own range)")
    return {"png": png, "maps": maps}


def _resize(image, size):
    import tensorflow as tf

    return tf.image.resize(image, size, method="bilinear").numpy()


def occlusion_map(clf, x, targets, *, patch=6, stride=2, fill=None, batch_size=256):
    """Zeiler & Fergus (2014): slide a grey patch over the image; the map at a
    pixel is the mean drop of p(target) over the patch positions covering it."""
    height, width = x.shape[1:3]
    if patch < 1 or patch > min(height, width) or stride < 1:
        raise UserError(f"--patch must be between 1 and {min(height, width)} and --stride at least 1")
    fill = float(np.mean(x)) if fill is None else float(fill)
    base = clf.predict(x)[np.arange(len(x)), targets]
    tops = list(range(0, height - patch + 1, stride))
    lefts = list(range(0, width - patch + 1, stride))
    if tops[-1] != height - patch:
        tops.append(height - patch)
    if lefts[-1] != width - patch:
        lefts.append(width - patch)
    drops = np.zeros(x.shape[:3])
    counts = np.zeros(x.shape[1:3])
    positions = [(t, l) for t in tops for l in lefts]
    for i in range(len(x)):
        occluded = np.repeat(x[i:i + 1], len(positions), axis=0)
        for k, (t, l) in enumerate(positions):
            occluded[k, t:t + patch, l:l + patch, :] = fill
        p = clf.predict(occluded, batch_size)[:, targets[i]]
        for k, (t, l) in enumerate(positions):
            drops[i, t:t + patch, l:l + patch] += base[i] - p[k]
            if i == 0:
                counts[t:t + patch, l:l + patch] += 1
    return drops / np.maximum(counts, 1), base


def occlusion(clf, x, labels, *, class_name=None, patch=6, stride=2, figures=None):
    targets = common.target_classes(clf, x, class_name)
    drops, base = occlusion_map(clf, x, targets, patch=patch, stride=stride)
    scale = np.max(np.abs(drops), axis=(1, 2), keepdims=True)
    shown = 0.5 + 0.5 * drops / np.maximum(scale, 1e-12)  # red: the class loses probability when hidden
    names = common.describe(clf, labels, targets)
    rows = [f"{n} p={b:.2f}" for n, b in zip(names, base)]
    png = os.path.join(common.figures_dir(figures, clf), "occlusion.png")
    common.rows_grid([common.to_display(x), common.heat(shown, "bwr"),
                      common.overlay(x, np.clip(drops / np.maximum(scale, 1e-12), 0, 1))],
                     ["input", "drop in p (red +)", "overlay"], rows, png,
                     f"{clf.name}: occlusion sensitivity, {patch}x{patch} patch, stride {stride}")
    return {"png": png, "maps": drops, "targets": targets}


def top_images(clf, layer, channel, *, count=9, pool=2000, figures=None):
    """The test images whose mean activation of `channel` in `layer` is highest."""
    model = clf.require_keras("maximally activating images")
    probe = layer_outputs(model, [layer])
    size = probe.outputs[0].shape[-1]
    if not 0 <= channel < size:
        raise UserError(f"layer '{layer}' has {size} channels; --channel must be between 0 and {size - 1}")
    x, y = common.test_examples(clf, pool)
    scores = []
    for i in range(0, len(x), 256):
        a = np.asarray(probe(x[i:i + 256], training=False))[..., channel]
        scores.append(a.reshape(len(a), -1).mean(axis=1))
    scores = np.concatenate(scores)
    best = np.argsort(-scores)[:count]
    titles = [f"{clf.class_names[y[i]]} a={scores[i]:.2f}" for i in best]
    png = os.path.join(common.figures_dir(figures, clf), f"top_images_{layer}_{channel}.png")
    plots.image_grid(common.to_display(x[best]), titles, png, columns=min(count, 9),
                     title=f"{clf.name}: top {count} of {len(x)} test images for '{layer}' channel {channel}")
    return {"png": png, "indices": best, "scores": scores}
