"""Experiment: sliding-window classification vs a fully convolutional network (why FCNs replaced it).

Before FCNs (Long et al. 2015), a CNN segmented an image by classifying one pixel at a time: crop the
P×P window around the pixel, run a patch classifier, keep the class of the centre (Ciresan et al. 2012,
Farabet et al. 2013). Here the patch net sees P = 30 pixels (the window of pixel (y, x) spans rows
y-15 .. y+14) and is a small CNN:

  conv 3×3 (16) → pool 2 → conv 3×3 (32) → pool 2 → conv 3×3 (64) → flatten 4·4·64 → dense 64 → dense K

It is trained on windows cropped around random pixels of the training scenes, label = the centre pixel's
class: the same pixel-wise cross-entropy the FCN minimizes, estimated from a sample of pixels.

The cost arithmetic. One window costs F_w forward FLOPs (2 × multiply-accumulates of its conv and dense
layers; biases, ReLU and pooling add ~1 % and are left out). Labelling every pixel of an S×S scene takes S²
windows, S²·F_w FLOPs, although neighbouring windows overlap in all but one row or column: almost all of
it recomputes the same conv features. The classic fix (OverFeat, Sermanet et al. 2014; Long et al. 2015):
a dense layer over a 4×4×64 map IS a 4×4 convolution with 64 outputs, and a dense layer after it a 1×1
convolution. With its dense layers rewritten so (`convolutional_twin`, the same weights), the patch net
runs on the whole zero-padded scene in one pass; every conv feature is computed once and shared by all
windows that contain it, and the output at (i, j) is exactly the window at (4i, 4j): the two poolings
make the net's stride 4. So one pass labels every 4th pixel, and 16 passes on the scene shifted by
(dy, dx) ∈ {0..3}² label every pixel ("shift-and-stitch", Long et al. §3.2). An FCN is designed for this
from the start: its encoder pools the whole scene and a decoder upsamples the coarse scores.

At the same training budget (the same scenes, the same number of Adam steps, and patch batches that cost
the same forward FLOPs as the FCN's scene batches) the table compares mIoU on validation scenes,
forward FLOPs and wall time per scene of: explicit windows at every pixel, at every 4th pixel
(each 4×4 block takes its window's class), the patch net run convolutionally (one pass = the every-4th
windows; 16 shifted passes = the every-pixel windows, the same numbers), and the FCN of models.py.
"""

import os
import time

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from apps.segment import app, metrics
from apps.segment.models import build_model
from core import scenes, training

PATCH = 30                 # window side; the window of pixel (y, x) starts at (y - CENTRE, x - CENTRE)
CENTRE = PATCH // 2
STRIDE = 4                 # two 2×2 poolings
CHUNK = 1024               # windows per call: bounds the memory of the explicit-window runs
DEFAULT_RUN = os.path.join("runs", "segment", "sliding_window")
SIZES = {False: dict(dataset="fashion_mnist_96", train_scenes=800, val_scenes=16, steps=200, batch_scenes=16),
         True: dict(dataset="fashion_mnist_64_small", train_scenes=256, val_scenes=8, steps=40, batch_scenes=8)}


# --- data ----------------------------------------------------------------------------------------------------

def scene_arrays(spec, split, count):
    """The first `count` scenes of a split of core.scenes (the same scenes as the tfds dataset's first
    `count`, generated in memory: no dataset build needed): images float32 (n, S, S, 1) in [0, 255],
    masks int32 (n, S, S)."""
    arrays = scenes.generate(spec, split, count=count)
    return arrays["image"].astype(np.float32), arrays["semantic"].astype(np.int32)


def pad_for_windows(images, extra=0):
    """Zero-pad (n, S, S, 1) scenes so that every pixel has a full window: CENTRE rows above, PATCH - 1 -
    CENTRE below (+ `extra` below and right, room for the shifted passes). Zero is the canvas colour."""
    after = PATCH - 1 - CENTRE + extra
    return np.pad(images, ((0, 0), (CENTRE, after), (CENTRE, after), (0, 0)))


def sample_patches(padded, masks, count, rng):
    """`count` windows around uniformly random pixels of random scenes, and their centre pixels' classes."""
    n, size = masks.shape[0], masks.shape[1]
    scene, y, x = rng.integers(n, size=count), rng.integers(size, size=count), rng.integers(size, size=count)
    offsets = np.arange(PATCH)
    windows = padded[scene[:, None, None], (y[:, None] + offsets)[:, :, None], (x[:, None] + offsets)[:, None, :]]
    return windows, masks[scene, y, x]


# --- the patch classifier and its convolutional twin ------------------------------------------------------------

def build_patch_net(num_classes):
    """PATCH×PATCH×1 raw pixels -> K class logits for the centre pixel."""
    windows = keras.Input((PATCH, PATCH, 1), name="windows")
    x = layers.Rescaling(1.0 / 255.0, name="scale")(windows)
    x = layers.Conv2D(16, 3, activation="relu", name="conv1")(x)   # 28×28
    x = layers.MaxPooling2D(2, name="pool1")(x)                     # 14×14
    x = layers.Conv2D(32, 3, activation="relu", name="conv2")(x)   # 12×12
    x = layers.MaxPooling2D(2, name="pool2")(x)                     # 6×6
    x = layers.Conv2D(64, 3, activation="relu", name="conv3")(x)   # 4×4
    x = layers.Flatten(name="flatten")(x)                           # 1024
    x = layers.Dense(64, activation="relu", name="fc1")(x)
    return keras.Model(windows, layers.Dense(num_classes, name="fc2")(x), name="patch_net")


def convolutional_twin(patch_net):
    """The same network on inputs of any size: each dense layer becomes the convolution it equals.
    fc1 reads the flattened 4×4×64 map (index (h·4 + w)·64 + c, row-major), so its (1024, 64) kernel
    reshaped to (4, 4, 64, 64) is a 4×4 conv kernel; fc2's (64, K) is a 1×1 conv kernel."""
    get = patch_net.get_layer
    scenes_in = keras.Input((None, None, 1), name="padded_scenes")
    x = layers.Rescaling(1.0 / 255.0, name="scale")(scenes_in)
    convs = []
    for name, pool in (("conv1", "pool1"), ("conv2", "pool2"), ("conv3", None)):
        conv = layers.Conv2D(get(name).filters, 3, activation="relu", name=name)
        convs.append((conv, get(name).get_weights()))
        x = conv(x)
        x = layers.MaxPooling2D(2, name=pool)(x) if pool else x
    fc1_kernel, fc1_bias = get("fc1").get_weights()
    side, channels = get("conv3").output.shape[1], get("conv3").filters
    fc1 = layers.Conv2D(fc1_kernel.shape[1], side, activation="relu", name="fc1_as_conv")
    fc2_kernel, fc2_bias = get("fc2").get_weights()
    fc2 = layers.Conv2D(fc2_kernel.shape[1], 1, name="fc2_as_conv")
    twin = keras.Model(scenes_in, fc2(fc1(x)), name="patch_net_convolutional")
    for conv, weights in convs:
        conv.set_weights(weights)
    fc1.set_weights([fc1_kernel.reshape(side, side, channels, -1), fc1_bias])
    fc2.set_weights([fc2_kernel.reshape(1, 1, *fc2_kernel.shape), fc2_bias])
    return twin


def compiled(model):
    """The model's inference call as a traced function (one trace per input shape): the timings below
    are of the computation, not of Keras' eager per-layer overhead."""
    return tf.function(lambda x: model(x, training=False))


def window_logits(patch_fn, images, step=1, offset=0):
    """Explicit sliding windows: the patch net on the window of every `step`-th pixel, starting at pixel
    `offset`, of each scene: (n, S/step, S/step, K), one window at a time in chunks of CHUNK."""
    padded = tf.constant(pad_for_windows(images, extra=offset)[:, offset:, offset:])
    out = []
    for scene in padded:
        windows = tf.image.extract_patches(scene[None], [1, PATCH, PATCH, 1], [1, step, step, 1], [1, 1, 1, 1],
                                           "VALID")
        side = images.shape[1] // step
        windows = tf.reshape(windows[:, :side, :side], (side * side, PATCH, PATCH, 1))
        logits = [patch_fn(windows[i:i + CHUNK]) for i in range(0, side * side, CHUNK)]
        out.append(tf.reshape(tf.concat(logits, 0), (side, side, -1)))
    return np.stack(out)


def shifted_inputs(images, shifts):
    """The padded scenes cropped at each (dy, dx) of `shifts`: (n·len(shifts), S + PATCH - 1, ..., 1)."""
    size = images.shape[1] + PATCH - 1
    padded = pad_for_windows(images, extra=STRIDE - 1)
    return np.concatenate([padded[:, dy:dy + size, dx:dx + size] for dy, dx in shifts])


def convolutional_logits(twin_fn, images, shift=(0, 0)):
    """One pass of the convolutional twin: (n, S/4, S/4, K), output (i, j) = the window of pixel
    (4i + dy, 4j + dx)."""
    return np.asarray(twin_fn(shifted_inputs(images, [shift])))


def shift_and_stitch(twin_fn, images):
    """Every pixel's logits from STRIDE² passes on shifted inputs, interleaved: (n, S, S, K)."""
    n, size = images.shape[0], images.shape[1]
    shifts = [(dy, dx) for dy in range(STRIDE) for dx in range(STRIDE)]
    out = np.stack([np.asarray(twin_fn(shifted_inputs(images[i:i + 1], shifts))) for i in range(n)])
    grid = size // STRIDE                       # out[i, dy·4 + dx, a, b] is pixel (4a + dy, 4b + dx)
    out = out.reshape(n, STRIDE, STRIDE, grid, grid, -1).transpose(0, 3, 1, 4, 2, 5)
    return out.reshape(n, size, size, -1)


def upsample_blocks(labels, factor=STRIDE):
    """(n, S/f, S/f) -> (n, S, S): every f×f block takes the label of its one window, the window of the
    block's pixel (2, 2) (shift (2, 2) below): no pixel is more than 2 rows or columns from its window's centre."""
    return labels.repeat(factor, axis=1).repeat(factor, axis=2)


# --- cost -------------------------------------------------------------------------------------------------------

def layer_flops(model, input_shape):
    """[(layer name, output shape, FLOPs)] of one forward pass of `model` on one input of `input_shape`
    (no batch axis): 2 × multiply-accumulates of every Conv2D (out_h·out_w·k_h·k_w·C_in·C_out), transposed
    conv (in_h·in_w·k_h·k_w·C_in·C_out: each input pixel is spread over a k×k patch) and Dense layer."""
    kinds = (layers.Conv2D, layers.Conv2DTranspose, layers.Dense)
    counted = [layer for layer in model.layers if isinstance(layer, kinds)]
    probe = keras.Model(model.inputs, [(layer.input, layer.output) for layer in counted])
    shapes = probe([np.zeros((1, *input_shape), np.float32)], training=False)
    rows = []
    for layer, (x, y) in zip(counted, shapes):
        c_in = x.shape[-1]
        if isinstance(layer, layers.Dense):
            macs = int(np.prod(y.shape[:-1])) * c_in * layer.units
        else:
            kh, kw = layer.kernel_size
            where = x if isinstance(layer, layers.Conv2DTranspose) else y
            macs = int(np.prod(where.shape[1:3])) * kh * kw * c_in * layer.filters
        rows.append((layer.name, tuple(y.shape[1:]), 2 * macs))
    return rows


def flops(model, input_shape):
    return sum(f for _, _, f in layer_flops(model, input_shape))


def cost_table(patch_net, twin, fcn, size):
    """Forward FLOPs per scene of each way of labelling an S×S scene, from the per-layer counts."""
    per_window = flops(patch_net, (PATCH, PATCH, 1))
    per_pass = flops(twin, (size + PATCH - 1, size + PATCH - 1, 1))
    return {"per_window": per_window, "per_pass": per_pass,
            "windows every pixel": size * size * per_window,
            "windows every 4th pixel": (size // STRIDE) ** 2 * per_window,
            "conv twin, 1 pass": per_pass, "conv twin, 16 shifted passes": STRIDE ** 2 * per_pass,
            "FCN": flops(fcn, (size, size, 1))}


# --- training at the same budget ---------------------------------------------------------------------------------

def train_steps(model, batches, *, loss, steps, learning_rate=2e-3):
    """`steps` Adam steps on the batches `batches(step) -> (x, y)`; returns (losses, seconds in steps)."""
    optimizer = keras.optimizers.Adam(learning_rate)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=True))
        optimizer.apply(tape.gradient(value, model.trainable_variables), model.trainable_variables)
        return value

    losses, seconds = [], 0.0
    for i in range(steps):
        x, y = batches(i)
        start = time.perf_counter()
        losses.append(float(step(tf.constant(x), tf.constant(y))))
        seconds += time.perf_counter() - start
        if (i + 1) % max(1, steps // 4) == 0:
            print(f"  {model.name}: step {i + 1}/{steps}, loss {np.mean(losses[-max(1, steps // 4):]):.3f}")
    return np.array(losses), seconds


def train_fcn(images, masks, num_classes, *, steps, batch_scenes, seed=0, learning_rate=2e-3):
    """The app's FCN on whole scenes: shuffled batches of `batch_scenes`, pixel-wise cross-entropy."""
    fcn = build_model("fcn", images.shape[1:], num_classes)
    rng = np.random.default_rng(seed)
    order = []

    def batches(_):
        while len(order) < batch_scenes:
            order.extend(rng.permutation(len(images)))
        index = [order.pop(0) for _ in range(batch_scenes)]
        return images[index], masks[index]

    losses, seconds = train_steps(fcn, batches, loss=keras.losses.SparseCategoricalCrossentropy(), steps=steps,
                                  learning_rate=learning_rate)
    return fcn, losses, seconds


def train_patch_net(images, masks, num_classes, *, steps, batch_windows, seed=0, learning_rate=2e-3):
    """The patch classifier on windows around random pixels of the same scenes."""
    net = build_patch_net(num_classes)
    padded, rng = pad_for_windows(images)[..., 0], np.random.default_rng(seed + 1)

    def batches(_):
        windows, labels = sample_patches(padded, masks, batch_windows, rng)
        return windows[..., None], labels

    losses, seconds = train_steps(net, batches, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                                  steps=steps, learning_rate=learning_rate)
    return net, losses, seconds


# --- evaluation --------------------------------------------------------------------------------------------------

def timed_per_scene(predict, images):
    """(predictions stacked, median milliseconds per scene), one scene per call after one warm-up call."""
    predict(images[:1])
    out, times = [], []
    for i in range(len(images)):
        start = time.perf_counter()
        out.append(predict(images[i:i + 1])[0])
        times.append(1000 * (time.perf_counter() - start))
    return np.stack(out), float(np.median(times))


def mask_panels(images, columns, names, path, title):
    """PNG: one row per scene: the scene, then one colour-coded mask overlay per column {heading: masks}."""
    import matplotlib.pyplot as plt

    from core.plots import save_figure

    colours = app.palette(len(names))
    fig, axes = plt.subplots(len(images), 1 + len(columns), figsize=(2.2 * (1 + len(columns)), 2.2 * len(images)),
                             squeeze=False)
    for i, image in enumerate(images):
        pictures = [np.asarray(image).squeeze() / 255.0] + [app.overlay(image, m[i], colours) for m in columns.values()]
        for ax, picture, heading in zip(axes[i], pictures, ["scene", *columns]):
            ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(heading, fontsize=8)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def miou(masks, predicted, num_classes):
    return metrics.segmentation_report(metrics.confusion_matrix(masks, predicted, num_classes))["mean_iou"]


def run(*, run_dir=DEFAULT_RUN, small=False, seed=0, steps=None):
    """Train both models at the same budget, label the validation scenes every way, print the cost
    arithmetic and the table, write sliding_window.png; returns the results."""
    size_cfg = dict(SIZES[small], **({"steps": steps} if steps else {}))
    spec, names = app.check_dataset(size_cfg["dataset"]), app.class_names(size_cfg["dataset"])
    out = training.make_output_dir(run_dir)
    training.set_seed(seed)
    images, masks = scene_arrays(spec, "train", size_cfg["train_scenes"])
    val_images, val_masks = scene_arrays(spec, "validation", size_cfg["val_scenes"])
    size, num_classes = spec.size, len(names)

    patch_net = build_patch_net(num_classes)
    fcn = build_model("fcn", (size, size, 1), num_classes)
    # The same forward FLOPs per step: a batch of windows costs what the FCN's batch of scenes costs.
    batch_windows = int(round(size_cfg["batch_scenes"] * flops(fcn, (size, size, 1)) / flops(patch_net,
                                                                                             (PATCH, PATCH, 1))))
    print(f"training both for {size_cfg['steps']} Adam steps on {len(images)} {size}x{size} scenes of "
          f"{size_cfg['dataset']}: FCN {size_cfg['batch_scenes']} scenes per step, patch net {batch_windows} "
          f"windows per step (the same forward FLOPs)")
    patch_net, patch_losses, patch_seconds = train_patch_net(images, masks, num_classes, steps=size_cfg["steps"],
                                                             batch_windows=batch_windows, seed=seed)
    fcn, fcn_losses, fcn_seconds = train_fcn(images, masks, num_classes, steps=size_cfg["steps"],
                                             batch_scenes=size_cfg["batch_scenes"], seed=seed)
    twin = convolutional_twin(patch_net)
    patch_fn, twin_fn, fcn_fn = compiled(patch_net), compiled(twin), compiled(fcn)

    costs = cost_table(patch_net, twin, fcn, size)
    print_cost_arithmetic(patch_net, twin, costs, size)
    methods = {
        "windows every pixel": lambda x: window_logits(patch_fn, x).argmax(-1),
        "windows every 4th pixel": lambda x: upsample_blocks(window_logits(patch_fn, x, STRIDE, 2).argmax(-1)),
        "conv twin, 1 pass": lambda x: upsample_blocks(convolutional_logits(twin_fn, x, (2, 2)).argmax(-1)),
        "conv twin, 16 shifted passes": lambda x: shift_and_stitch(twin_fn, x).argmax(-1),
        "FCN": lambda x: np.asarray(fcn_fn(x)).argmax(-1),
    }
    results, predictions = {}, {}
    for name, predict in methods.items():
        predictions[name], ms = timed_per_scene(predict, val_images)
        results[name] = {"mean_iou": miou(val_masks, predictions[name], num_classes), "ms_per_scene": ms,
                         "flops_per_scene": costs[name]}
    # The equivalence, on the trained net: explicit windows and the convolutional twin, logit for logit.
    explicit, stitched = window_logits(patch_fn, val_images[:2]), shift_and_stitch(twin_fn, val_images[:2])
    max_difference = float(np.max(np.abs(explicit - stitched)))

    print(f"\nvalidation: {len(val_images)} scenes; training seconds: patch net {patch_seconds:.0f}, "
          f"FCN {fcn_seconds:.0f}; final training loss: patch net {patch_losses[-10:].mean():.3f}, "
          f"FCN {fcn_losses[-10:].mean():.3f}")
    print(f"{'method':>30} {'mIoU':>7} {'ms/scene':>9} {'GFLOPs/scene':>13} {'FLOPs/FCN':>10}")
    for name, r in results.items():
        print(f"{name:>30} {r['mean_iou']:7.3f} {r['ms_per_scene']:9.1f} {r['flops_per_scene'] / 1e9:13.4f} "
              f"{r['flops_per_scene'] / costs['FCN']:9.1f}x")
    print(f"explicit windows vs convolutional twin (every pixel, 2 scenes): max |logit difference| "
          f"{max_difference:.2g}")
    shown = min(4, len(val_images))
    png = mask_panels(val_images[:shown], {"ground truth": val_masks[:shown],
                                           "sliding window (every pixel)": predictions["windows every pixel"][:shown],
                                           "FCN": predictions["FCN"][:shown]}, names,
                      os.path.join(out, "sliding_window.png"),
                      title=f"same budget ({size_cfg['steps']} steps): sliding-window mIoU "
                            f"{results['windows every pixel']['mean_iou']:.3f} at "
                            f"{costs['windows every pixel'] / 1e9:.1f} GFLOPs/scene, FCN "
                            f"{results['FCN']['mean_iou']:.3f} at {costs['FCN'] / 1e9:.2f}")
    print(f"wrote {png}")
    return {"results": results, "costs": costs, "max_logit_difference": max_difference, "pngs": [png],
            "batch_windows": batch_windows}


def print_cost_arithmetic(patch_net, twin, costs, size):
    """Per layer: FLOPs of one window, and of one pass of the twin over the padded scene."""
    padded = size + PATCH - 1
    print(f"\ncost arithmetic (FLOPs = 2 x multiply-accumulates; {size}x{size} scene, padded to {padded}x{padded}):")
    print(f"{'layer':>12} {'one window':>26} {'one pass of the twin':>32}")
    for (name, shape, f), (_, shape_t, f_t) in zip(layer_flops(patch_net, (PATCH, PATCH, 1)),
                                                   layer_flops(twin, (padded, padded, 1))):
        print(f"{name:>12} {str(shape):>14} {f:>11,} {str(shape_t):>16} {f_t:>15,}")
    windows, stitched = costs["windows every pixel"], costs["conv twin, 16 shifted passes"]
    print(f"every pixel: {size}^2 = {size * size:,} windows x {costs['per_window']:,} = {windows:,} FLOPs; "
          f"the twin: {STRIDE ** 2} passes x {costs['per_pass']:,} = {stitched:,} ({windows / stitched:.1f}x less); "
          f"FCN: {costs['FCN']:,} ({windows / costs['FCN']:.0f}x less)")
