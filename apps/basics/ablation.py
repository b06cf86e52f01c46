"""Experiment: remove layers from an AlexNet-style convnet — does depth matter?

Krizhevsky, Sutskever & Hinton 2012 ("ImageNet classification with deep convolutional neural
networks", §7 Discussion): "our network's performance degrades if a single convolutional layer is
removed. For example, removing any of the middle layers results in a loss of about 2% for the top-1
performance of the network. So the depth really is important for achieving our results." Zeiler & Fergus 2014
("Visualizing and understanding convolutional networks", §5.3, Table 3) removed layers of their AlexNet-
like net on ImageNet: without the two fully connected layers 6 and 7 — most of the parameters — the
error barely rises, without the middle convolutions 3 and 4 somewhat more, and without 3, 4, 6 and 7
together it rises from about 40% to about 71%: "the overall depth of the model is important".

The net here is AlexNet's layout scaled to 28x28 gray images (the layout of apps/classify's `alexnet`):
five ReLU convolutions (5x5, 5x5, then three 3x3; 64-128-192-192-128 channels times `width`), 3x3/2 max
pooling after conv1, conv2 and conv5, two ReLU fully connected layers (512 and 256 units times `width`)
and a softmax. A variant drops named weight layers and keeps everything else, the pooling included, so
the feature maps keep their sizes; it is trained from scratch with the same optimizer, shuffling seed
and number of epochs. No local response normalization, dropout or batch norm: none of them is the question
here, and they add noise at small budgets (BN's running statistics make the validation accuracy jump
from epoch to epoch after a few hundred steps).

What shows at the budgets a CPU allows (measured, width 1/8; docs/basics.md has the tables): removing
ONE middle convolution, conv3 and conv4 together, or the fully connected layers does NOT cost
accuracy on Fashion-MNIST — the shallower variants are as good or better: after 1 epoch on 2,000
images the full net has 0.655, without conv3 0.663, without fc6 and fc7 0.717; after 5 epochs on 8,000
images the full net has 0.817 and every one of these variants 0.83-0.84. Fashion-MNIST is easy for
shallow nets (a linear classifier reaches about 84% on all 60,000 images), a short training favours
the nets with fewer layers to train (the optimization side of the degradation experiment), and the
paper's 2% is a difference between nets trained for 90 epochs on 1.2 million images of 1,000 classes.

What does show is Zeiler & Fergus' point about depth when MOST of it goes: conv1 + conv5 + softmax (the
middle convolutions and the fully connected layers removed) is behind the full net after the first
epoch in every seed we ran (0-7: by 0.008 to 0.12), and conv1 + softmax alone falls far behind (0.09
to 0.35 below conv1 + conv5), though the pooling still hands the classifier the same 4x4 grid. The
test asserts this trend, at the tiny budget where it shows: 2,000 images, one epoch. With longer
training the three-layer net catches up with the full one (2 epochs: 0.69-0.72 against 0.71-0.74;
5 epochs on 8,000 images: 0.818 against 0.817).
"""

import os

import keras
import numpy as np

from apps.basics.common import experiment_folder, load_arrays, print_table, save

CONVOLUTIONS = (  # (name, channels at width 1, kernel size, max pooling after it)
    ("conv1", 64, 5, True), ("conv2", 128, 5, True), ("conv3", 192, 3, False), ("conv4", 192, 3, False),
    ("conv5", 128, 3, True))
FULLY_CONNECTED = (("fc6", 512), ("fc7", 256))
VARIANTS = {  # name: the weight layers removed
    "full": (),
    "no conv3": ("conv3",),  # without conv4 instead it is the same net: conv3 and conv4 have the same width
    "no conv3, conv4": ("conv3", "conv4"),
    "no fc6, fc7": ("fc6", "fc7"),
    "no conv3, conv4, fc6, fc7": ("conv3", "conv4", "fc6", "fc7"),
    "conv1, conv5 only": ("conv2", "conv3", "conv4", "fc6", "fc7"),
    "conv1 only": ("conv2", "conv3", "conv4", "conv5", "fc6", "fc7"),
}
SETTINGS = {  # (training images, epochs, width) per size; tests/test_basics_architectures.py trains at "small"
    "small": (2000, 1, 0.125),
    "default": (6000, 3, 0.125),
}


def alexnet_without(removed=(), *, input_shape=(28, 28, 1), num_classes=10, width=0.125, seed=0):
    """The AlexNet-style net of the module docstring without the weight layers named in `removed`
    (conv1 ... conv5, fc6, fc7); the pooling layers stay. Standardized pixels in (see `image_arrays`), class
    probabilities out."""
    unknown = set(removed) - {name for name, *_ in CONVOLUTIONS} - {name for name, _ in FULLY_CONNECTED}
    if unknown:
        raise ValueError(f"unknown layers to remove: {sorted(unknown)}")
    keras.utils.set_random_seed(seed)  # the layers a variant keeps start from the same kind of random draw
    images = keras.Input(input_shape, name="images")
    x = images
    for name, channels, kernel, pool in CONVOLUTIONS:
        if name not in removed:
            x = keras.layers.Conv2D(max(2, round(channels * width)), kernel, padding="same", activation="relu",
                                    kernel_initializer="he_normal", name=name)(x)
        if pool:
            x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name=f"pool_{name}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    for name, units in FULLY_CONNECTED:
        if name not in removed:
            x = keras.layers.Dense(max(2, round(units * width)), activation="relu", kernel_initializer="he_normal",
                                   name=name)(x)
    probabilities = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(images, probabilities, name="alexnet_" + ("_".join(removed) or "full"))


def weight_layers(model):
    """Names of the model's layers that have weights (the softmax classifier included)."""
    return [layer.name for layer in model.layers if layer.weights]


def image_arrays(training_images, *, seed=0):
    """Fashion-MNIST as (x, y) training and validation arrays of 28x28x1 pixels, standardized with the training
    images' mean and standard deviation (one of each: per-pixel statistics would not suit a convolution); both
    splits hold `training_images` images (the validation split comes from the official training set, as in
    core.data)."""
    arrays = load_arrays("fashion_mnist", limit=training_images, seed=seed)
    mean, std = arrays["train"][0].mean(), arrays["train"][0].std()
    return [(((x - mean) / std).reshape(-1, 28, 28, 1), y) for x, y in (arrays["train"], arrays["val"])]


def compare(train, val, variants, *, epochs, width, batch_size=32, learning_rate=1e-3, seed=0):
    """Train every variant (name → removed layers) from scratch with Adam, Keras' shuffling seeded the same way
    for every variant, and the same number of epochs. Returns per name: parameters, weight layers,
    validation accuracy after every epoch and the final training accuracy."""
    (x, y), (x_val, y_val) = train, val
    results = {}
    for name, removed in variants.items():
        model = alexnet_without(removed, input_shape=x.shape[1:], width=width, seed=seed)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        keras.utils.set_random_seed(seed)  # the shuffling of every variant
        history = model.fit(x, y, batch_size=batch_size, epochs=epochs, validation_data=(x_val, y_val), verbose=0)
        results[name] = {"params": model.count_params(), "layers": weight_layers(model),
                         "val_accuracy": np.array(history.history["val_accuracy"]),
                         "train_accuracy": float(history.history["accuracy"][-1])}
        print(f"  {name}: validation accuracy {results[name]['val_accuracy'][-1]:.3f}", flush=True)
    return results


def run(*, folder=None, small=False, seed=0):
    import matplotlib.pyplot as plt

    folder = experiment_folder(folder, "ablation")
    images, epochs, width = SETTINGS["small" if small else "default"]
    train, val = image_arrays(images, seed=seed)
    print(f"training {len(VARIANTS)} variants on {len(train[0]):,} Fashion-MNIST images, "
          f"{epochs} epoch{'s' if epochs > 1 else ''} each")
    results = compare(train, val, VARIANTS, epochs=epochs, width=width, seed=seed)
    full = results["full"]["val_accuracy"]
    shown = sorted({0, epochs - 1})  # after the first epoch and at the end
    header = ["variant", "weight layers", "parameters"]
    for epoch in shown:
        header += [f"validation acc. epoch {epoch + 1}", "vs full"]
    print_table(f"AlexNet-style convnet (width {width}) with layers removed, Fashion-MNIST: {len(train[0]):,} "
                f"training and {len(val[0]):,} validation images, {epochs} epoch(s) of Adam (η 1e-3, batch 32), "
                "the same shuffling seed for every variant",
                header + ["training acc. (last epoch's batches)"],
                [[name, len(r["layers"]), r["params"],
                  *[v for e in shown for v in (r["val_accuracy"][e], f"{r['val_accuracy'][e] - full[e]:+.3f}")],
                  r["train_accuracy"]] for name, r in results.items()])

    fig, ax = plt.subplots(figsize=(10, 4.8))
    names = list(results)
    bar_width = 0.8 / len(shown)
    for k, epoch in enumerate(shown):
        accuracy = [results[n]["val_accuracy"][epoch] for n in names]
        bars = ax.bar(np.arange(len(names)) + (k - (len(shown) - 1) / 2) * bar_width, accuracy, bar_width,
                      color="tab:blue" if epoch == epochs - 1 else "tab:gray", label=f"after epoch {epoch + 1}")
        for bar in bars:
            ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.004, f"{bar.get_height():.3f}",
                    ha="center", va="bottom", fontsize=7)
        ax.axhline(full[epoch], color="tab:blue" if epoch == epochs - 1 else "tab:gray", linestyle=":", linewidth=1)
    labels = [f"{n}\n{len(results[n]['layers'])} layers, {results[n]['params'] / 1000:.0f}k" for n in names]
    ax.set_xticks(range(len(names)), labels, rotation=30, ha="right", fontsize=7)
    lowest = min(min(r["val_accuracy"][e] for e in shown) for r in results.values())
    ax.set_ylim(max(0.0, lowest - 0.1), 1.0)
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"Layer removal in an AlexNet-style convnet on Fashion-MNIST ({len(train[0]):,} training images, "
                 f"seed {seed}); dotted: the full net", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, loc="upper right")
    png = save(fig, os.path.join(folder, "validation_accuracy.png"))
    print(f"wrote {png}")
    return {"results": results, "pngs": [png]}
