"""Semantic segmentation of generated scenes: every pixel gets a class.

The scenes (core/scenes.py, the tensorflow-datasets `generated_scenes`) paste
Fashion-MNIST or MNIST items onto a dark canvas with dim clutter; the label of
a pixel is 0 for background and c + 1 for an item of class c. The story:

  train     load a scene config as tf.data, build FCN, SegNet or U-Net inside
            the distribution strategy's scope, compile with pixel-wise
            cross-entropy, class-mean Dice, or both, and fit with checkpoints
            that resume after a kill.
  evaluate  the confusion matrix over the held-out test scenes, and from it pixel
            accuracy, mean pixel accuracy, per-class IoU and mean IoU, next to the
            trivial baseline that calls every pixel background; confusion-matrix and
            overlay PNGs, metrics.json.
  export    SavedModel (images -> probabilities, mask) and float / dynamic-range
            TFLite files, checked against the SavedModel on the same test scenes.
  predict   colour-coded mask overlays of PNG files (or of test scenes, next to
            their true masks) as one PNG.
  preview   the dataset's scenes, masks and boxes as a PNG.
"""

import dataclasses
import json
import os

import keras
import numpy as np
import tensorflow as tf

from apps.segment import metrics
from apps.segment.config import APP, MODEL_EPOCHS, PreviewConfig, TrainConfig
from apps.segment.losses import make_loss
from apps.segment.models import MODELS, OUTPUT, build_model
from core import distribute, export, plots, precision, results, scenes, training
from core.cli import run_config
from core.data import batched
from core.errors import UserError

MASK_OUTPUT = "mask"
# Export parity. The probabilities must agree within these largest absolute
# differences: core.export.TOLERANCES for float; for dynamic-range int8 weights a
# looser bound, since the maximum is taken over every class of every pixel
# (~10^5 values per scene, not 10 per image as for a classifier). The argmax mask
# may then flip only at pixels whose two most probable classes are nearly tied:
# if no probability moved by more than d, a flip needs a margin <= 2d.
# int8 rounds every activation to 256 levels of its calibrated range (and the softmax output to steps of 1/256),
# so a probability drifts further than under dynamic quantization, where activations stay float (measured on the
# 3-epoch test FCN: dynamic 0.07-0.11, int8 0.16-0.28); the mask rule below is the same for all.
PROBABILITY_TOLERANCES = {"float": export.TOLERANCES["float"], "dynamic": 0.25, "int8": 0.35}
INT8_MIN_MASK_AGREEMENT = 0.9  # int8 mask = SavedModel mask on at least this share of pixels (92.7-94.8 % on
# the 3-epoch test FCN, whose classes are near-tied on many pixels; the flip rule above still holds for every pixel)
MIN_SHARE = 0.002  # predict lists the classes covering at least this share of an image


# --------------------------------------------------------------------------
# data


def dataset_names():
    return [config.name for config in scenes.tfds_builder().BUILDER_CONFIGS]


def check_dataset(dataset):
    if dataset not in dataset_names():
        raise UserError(f"unknown scene dataset '{dataset}'; choose one of: {', '.join(dataset_names())}")
    return scenes.spec_of(dataset)


def class_names(dataset):
    """Class 0 is the background; class c + 1 is the item class c."""
    return ["background", *scenes.class_names(check_dataset(dataset).source)]


def load_split(dataset, split, data_dir=None, limit=None):
    """Unbatched tf.data of (image float32 (S, S, 1) raw pixels in [0, 255], mask int32 (S, S))."""
    check_dataset(dataset)
    data = scenes.load(split, dataset, data_dir)
    if limit:
        data = data.take(limit)
    return data.map(lambda scene: (tf.cast(scene["image"], tf.float32), tf.cast(scene["semantic"], tf.int32)),
                    num_parallel_calls=tf.data.AUTOTUNE)


def one_hot_targets(num_classes):
    """Per batch: integer masks -> one-hot (N, S, S, K), which both Dice and cross-entropy read."""
    return lambda images, masks: (images, tf.one_hot(masks, num_classes))


# --------------------------------------------------------------------------
# train


def train(config: TrainConfig, *, run_dir, strategy="auto"):
    """Train `config.model` on the scene config `config.dataset` into `run_dir`; `config.batch_size` is per
    replica, `config.limit` caps the training scenes (validation then uses a quarter as many)."""
    MODELS.get(config.model)  # unknown names fail now, not after loading the data
    make_loss(config.loss)
    spec = check_dataset(config.dataset)
    strategy_name, strategy = strategy, distribute.get_strategy(strategy)  # before any other TF work
    training.set_seed(config.seed)
    names = class_names(config.dataset)
    image_shape = (spec.size, spec.size, 1)
    num_train = min(config.limit or spec.train, spec.train)
    num_val = min(max(1, num_train // 4) if config.limit else spec.validation, spec.validation)
    global_batch = distribute.global_batch_size(config.batch_size, strategy)
    config = dataclasses.replace(config, epochs=config.epochs or MODEL_EPOCHS[config.model])  # config.json: a number
    learning_rate = config.learning_rate
    if config.lr_schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(
            learning_rate, decay_steps=config.epochs * -(-num_train // global_batch))

    with strategy.scope(), precision.policy(config.precision):
        net = build_model(config.model, image_shape, len(names))  # softmax in float32 (models.OUTPUT_DTYPE)
        net.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=make_loss(config.loss),
                    metrics=[keras.metrics.CategoricalAccuracy(name="pixel_accuracy"),
                             keras.metrics.MeanIoU(len(names), sparse_y_true=False, sparse_y_pred=False,
                                                   name="mean_iou")],
                    jit_compile=precision.xla(config.jit))
    recorded = run_config(config, APP, class_names=names, image_shape=list(image_shape), strategy=strategy_name,
                          replicas=strategy.num_replicas_in_sync)
    writes_files = training.start_run(run_dir, recorded, strategy, dataset_name=f"generated_scenes/{config.dataset}",
                                      num_examples=num_train, global_batch=global_batch,
                                      identity_keys=("model", "loss", "dataset"))
    targets = one_hot_targets(len(names))
    training.fit(
        net,
        batched(load_split(config.dataset, "train", config.data_dir, num_train), global_batch, shuffle=True,
                seed=config.seed, augment=targets),
        batched(load_split(config.dataset, "validation", config.data_dir, num_val), global_batch, augment=targets),
        epochs=config.epochs, run_dir=run_dir, patience=config.patience, writes_files=writes_files)
    return net


# --------------------------------------------------------------------------
# evaluate


def predict_masks(net, images, batch_size=32):
    """Argmax class of every pixel, (N, S, S) int. Eager calls: tracing a predict
    function costs more than it saves on the few batches of an evaluation."""
    return np.concatenate([np.asarray(net(images[i:i + batch_size], training=False)).argmax(axis=-1)
                           for i in range(0, len(images), batch_size)])


def confusion_over(net, data, num_classes, batch_size=32):
    """The (K, K) confusion matrix of `net` over an unbatched (image, mask) pipeline, batch by batch."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    for images, masks in data.batch(batch_size).as_numpy_iterator():
        matrix += metrics.confusion_matrix(masks, predict_masks(net, images, batch_size), num_classes)
    return matrix


def evaluate(run_dir, *, limit=None):
    """The run's best model on the test scenes; prints and saves the metrics; returns
    {"model": report, "all_background": report, "confusion_matrix": matrix}."""
    config = training.load_config(run_dir)
    net = training.load_trained_model(run_dir, input_shape=config.get("image_shape"))
    names = config["class_names"]
    test = load_split(config["dataset"], "test", config.get("data_dir"), limit)
    matrix = confusion_over(net, test, len(names))
    report = metrics.segmentation_report(matrix)
    baseline = metrics.segmentation_report(metrics.background_matrix(matrix))
    num_scenes = int(matrix.sum() // (config["image_shape"][0] * config["image_shape"][1]))

    print(f"{config['model']} ({config['loss']} loss) on {num_scenes} test scenes of {config['dataset']}:")
    print(f"{'':>22} {'model':>8} {'all-background':>15}")
    for key in ("mean_iou", "pixel_accuracy", "mean_pixel_accuracy"):
        print(f"{key.replace('_', ' '):>22} {report[key]:8.4f} {baseline[key]:15.4f}")
    print(f"{'class':>14} {'IoU':>7} {'accuracy':>9}")
    for name, iou, accuracy in zip(names, report["iou"], report["class_accuracy"]):
        print(f"{name:>14} {iou:7.4f} {accuracy:9.4f}")

    metrics_path = os.path.join(run_dir, "metrics.json")
    with open(metrics_path, "w") as f:
        json.dump({"model": config["model"], "loss": config["loss"], "dataset": config["dataset"],
                   "num_scenes": num_scenes, **metrics.as_json(report, names),
                   "all_background": metrics.as_json(baseline, names),
                   "confusion_matrix": matrix.tolist()}, f, indent=2)
    cm_png = plots.confusion_matrix(matrix, names, os.path.join(run_dir, "confusion_matrix.png"),
                                    title=f"{config['model']}: pixels, mIoU {report['mean_iou']:.3f}")
    images, masks = next(test.batch(8).as_numpy_iterator())
    overlay_png = overlays(images, predict_masks(net, images), names, os.path.join(run_dir, "test_predictions.png"),
                           truth=masks, title=f"{config['model']} on test scenes")
    headline = ("mean_iou", "pixel_accuracy", "mean_pixel_accuracy")
    results_path = results.write_results(
        run_dir, app="segment", model=config["model"], dataset=config["dataset"],
        metrics={k: report[k] for k in headline}, baselines={f"all_background_{k}": baseline[k] for k in headline},
        budget=results.budget_of(config), seed=config.get("seed"))
    print(f"wrote {cm_png}\nwrote {overlay_png}\nwrote {metrics_path}\nwrote {results_path}")
    return {"model": report, "all_background": baseline, "confusion_matrix": matrix}


# --------------------------------------------------------------------------
# pictures


def palette(num_classes):
    """RGB in [0, 1] per class: black background, tab10/tab20 colours for the items."""
    import matplotlib

    colours = list(matplotlib.colormaps["tab10" if num_classes <= 11 else "tab20"].colors)
    colours = [(0.3, 1.0, 0.3) if r == g == b else (r, g, b) for r, g, b in colours]  # gray tint = no tint: lime
    return np.array([(0.0, 0.0, 0.0)] + [colours[i % len(colours)] for i in range(num_classes - 1)])


def overlay(image, mask, colours, alpha=0.55):
    """A gray image (S, S, 1) in [0, 255] with the non-background pixels tinted by their class colour."""
    gray = np.repeat(np.asarray(image, np.float64).reshape(mask.shape + (1,)) / 255.0, 3, axis=-1)
    tinted = (1 - alpha) * gray + alpha * colours[mask]
    return np.where((mask > 0)[..., None], tinted, gray)


def overlays(images, predicted, names, png_path, truth=None, title=None):
    """PNG: one row per image: the image | the true mask overlay (when known) | the predicted one."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    colours = palette(len(names))
    panels = ["image"] + (["truth"] if truth is not None else []) + ["prediction"]
    # One more, short row of axes below the panels holds the class colours.
    fig, rows = plt.subplots(
        len(images) + 1,
        len(panels),
        figsize=(max(2.2 * len(panels), 5.5), 2.2 * len(images) + 0.7),
        squeeze=False,
        height_ratios=[1] * len(images) + [0.3],
    )
    axes, legend_row = rows[:-1], rows[-1]
    for ax in legend_row:
        ax.axis("off")
    for i, image in enumerate(images):
        pictures = [np.asarray(image).squeeze() / 255.0]
        if truth is not None:
            pictures.append(overlay(image, truth[i], colours))
        pictures.append(overlay(image, predicted[i], colours))
        for ax, picture, panel in zip(axes[i], pictures, panels):
            ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(panel, fontsize=9)
    legend = legend_row[0].legend(
        handles=[Patch(color=colours[c], label=name) for c, name in enumerate(names) if c > 0],
        loc="upper left",
        ncol=5,
        fontsize=7,
        frameon=False,
    )
    legend.set_in_layout(False)  # it spans the whole row; tight_layout would shrink the panels for it
    if title:
        fig.suptitle(title, fontsize=10)
    return plots.save_figure(fig, png_path)


def preview(config: PreviewConfig, *, run_dir):
    """RUN_DIR/preview_<dataset>_<split>.png: the first scenes of a split, images with boxes, and semantic masks."""
    dataset, split, count = config.dataset, config.split, config.count
    spec = check_dataset(dataset)
    size = spec.size
    examples = list(scenes.load(split, dataset, config.data_dir).take(count).as_numpy_iterator())
    num_boxes = max(1, max(len(e["objects"]["label"]) for e in examples))
    boxes = np.zeros((len(examples), num_boxes, 4), np.float32)
    classes = np.full((len(examples), num_boxes), -1, np.int32)
    for i, example in enumerate(examples):
        n = len(example["objects"]["label"])
        y0, x0, y1, x1 = (example["objects"]["bbox"].reshape(n, 4) * size).T  # tfds: normalized y/x order
        boxes[i, :n] = np.stack([x0, y0, x1, y1], axis=-1)
        classes[i, :n] = example["objects"]["label"]
    arrays = {
        "image": np.stack([e["image"] for e in examples]),
        "semantic": np.stack([e["semantic"] for e in examples]),
        "boxes": boxes,
        "classes": classes,
        "num_objects": (classes >= 0).sum(axis=1),
    }
    path = scenes.preview(
        arrays,
        os.path.join(training.make_output_dir(run_dir), f"preview_{dataset}_{split}.png"),
        count=count,
        names=scenes.class_names(spec.source),
    )
    print(f"wrote {path}")
    return path


# --------------------------------------------------------------------------
# export


@keras.saving.register_keras_serializable(package="segment")
class ClassMask(keras.layers.Layer):
    """The most probable class of every pixel: (N, S, S, K) -> int32 (N, S, S).
    tf.argmax, not keras.ops.argmax: the latter adds -0.0 handling that lowers
    to a BitwiseAnd TFLite has no builtin for."""

    def call(self, probabilities):
        return tf.argmax(probabilities, axis=-1, output_type=tf.int32)

    def compute_output_spec(self, probabilities):
        return keras.KerasTensor(probabilities.shape[:-1], "int32")


def serving_model(net):
    """images -> (probabilities, mask): what the exported signature returns."""
    return keras.Model(net.input, [net.output, ClassMask(name=MASK_OUTPUT)(net.output)], name=f"{net.name}_serving")


def parity(kind, reference, candidate):
    """export.export_model's check for the segmenter: the probabilities within
    PROBABILITY_TOLERANCES[kind], and no mask pixel flipped where the two most
    likely classes were further apart than that difference could explain (an
    integer mask fails a plain absolute check as soon as one tied pixel flips)."""
    probabilities = reference[OUTPUT].astype(np.float64)
    difference = float(np.max(np.abs(probabilities - candidate[OUTPUT])))
    if not np.isfinite(difference):  # NaN or infinite probabilities: no figure says how far apart they are
        return {"max_abs_diff": difference}, f"in probabilities by {difference}"
    flipped = reference[MASK_OUTPUT] != candidate[MASK_OUTPUT]
    top_two = np.sort(probabilities, axis=-1)[..., -2:]
    unexplained = int((flipped & (top_two[..., 1] - top_two[..., 0] > 2 * difference + 1e-6)).sum())
    figures = {
        "max_abs_diff": difference,
        "mask_agreement": float(1.0 - flipped.mean()),
        "mask_unexplained_flips": unexplained,
    }
    problem = None
    if difference > PROBABILITY_TOLERANCES[kind] or unexplained:
        problem = (
            f"in probabilities by {difference:.3g} (tolerance {PROBABILITY_TOLERANCES[kind]}); "
            f"{unexplained} mask pixels flipped where the classes were not tied"
        )
    elif kind == "int8" and figures["mask_agreement"] < INT8_MIN_MASK_AGREEMENT:
        problem = f"in the mask: it agrees on {100 * figures['mask_agreement']:.2f} % of the pixels " \
                  f"(at least {100 * INT8_MIN_MASK_AGREEMENT:.0f} %)"
    return figures, problem


def export_run(run_dir, *, export_dir="saved_models", version=None, num_samples=16):
    """The export folder `export.export_folder("segment", model)`: <version>/ (signature images ->
    probabilities, mask) and tflite/<version>/{float,dynamic,int8}.tflite (int8 calibrated on training scenes),
    parity-checked on test scenes."""
    config = training.load_config(run_dir)
    net = serving_model(training.load_trained_model(run_dir, input_shape=config.get("image_shape")))
    test = load_split(config["dataset"], "test", config.get("data_dir"), num_samples)
    sample = {"images": np.stack([image for image, _ in test.as_numpy_iterator()])}
    train = load_split(config["dataset"], "train", config.get("data_dir"), 32)  # int8's calibration scenes
    representative = [images for images, _ in train.batch(8).as_numpy_iterator()]
    app_dir = training.make_output_dir(export.export_folder(APP, config["model"], export_dir))
    report = export.export_model(
        net,
        app_dir,
        input_names=["images"],
        output_names=[OUTPUT, MASK_OUTPUT],
        sample_inputs=sample,
        representative_data=representative,
        class_names=config["class_names"],
        version=version,
        check=parity,
    )
    keras_probabilities = np.asarray(net(sample["images"], training=False)[0])
    served = report["saved_model_outputs"][OUTPUT]
    report["keras_vs_saved_model"] = float(np.max(np.abs(keras_probabilities - served)))
    print(
        f"wrote SavedModel {report['saved_model']} (signature '{export.SIGNATURE}': images -> {OUTPUT}, "
        f"{MASK_OUTPUT}); max |difference| vs Keras {report['keras_vs_saved_model']:.2g}"
    )
    for kind, path in report["tflite"].items():
        figures = report["parity"][kind]
        print(
            f"wrote TFLite {path} ({os.path.getsize(path) / 1024:.0f} KiB): max |difference| of the probabilities "
            f"{figures['max_abs_diff']:.2g}, mask agrees on {100 * figures['mask_agreement']:.3f} % of "
            f"{sample['images'].shape[0]} scenes' pixels"
        )
    return report


# --------------------------------------------------------------------------
# predict


def predict(paths, *, run_dir, saved_model=None, resize=False, count=8, png=None):
    """Colour-coded mask overlays as one PNG: of the image files `paths` (image |
    prediction), or, with no paths, of the first `count` test scenes (image | truth |
    prediction). Uses the run's model, or an exported SavedModel version folder."""
    from core.images import read_image  # PNG/JPEG -> raw float pixels, with one-line errors

    if saved_model:
        loaded, signature = export.load_signature(
            saved_model, inputs=["images"], outputs=[OUTPUT, MASK_OUTPUT], what="a segment export"
        )
        names = export.read_labels(saved_model) or [
            str(c) for c in range(signature.structured_outputs[OUTPUT].shape[-1])
        ]  # no labels.txt: class numbers
        image_shape = tuple(signature.structured_input_signature[1]["images"].shape[1:])
        run = lambda batch: signature(images=tf.constant(batch))[MASK_OUTPUT].numpy()
        source = saved_model
    else:
        config = training.load_config(run_dir)
        net = training.load_trained_model(run_dir, input_shape=config.get("image_shape"))
        names, image_shape = config["class_names"], tuple(config["image_shape"])
        run = lambda batch: predict_masks(net, batch)
        source = f"{config['model']} ({run_dir})"
    png = png or os.path.join(run_dir, "predictions.png")
    if paths:
        images = np.stack([read_image(p, image_shape, resize) for p in paths]).astype(np.float32)
        truth = None
    else:
        if saved_model:
            raise UserError("with --saved-model, give image files to segment")
        images, truth = next(
            load_split(config["dataset"], "test", config.get("data_dir"), count)
            .batch(count)
            .as_numpy_iterator()
        )
        paths = [f"test scene {i}" for i in range(len(images))]
    masks = run(images)
    for path, mask in zip(paths, masks):
        present = np.bincount(mask.ravel(), minlength=len(names)) / mask.size
        found = [
            f"{names[c]} {100 * present[c]:.1f} %" for c in np.argsort(-present) if c > 0 and present[c] >= MIN_SHARE
        ]
        print(f"{path}: " + (", ".join(found) if found else "background only"))
    written = overlays(images, masks, names, png, truth=truth, title=f"segmentation by {source}")
    print(f"wrote {written}")
    return masks
