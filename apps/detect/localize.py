"""Experiment: classification + localisation of a single object, the step before detection.

When a scene holds exactly one object, detection reduces to two regressions from one
network: a softmax over the classes and four numbers for the box. A CNN with two heads,
trained on the sum of the two losses,

    L = cross-entropy(class) + lambda * box loss,

box loss either smooth L1 on the corners in units of the image side (Fast R-CNN's box
loss, beta = 1/9 as in Detectron) or the generalised-IoU loss 1 - GIoU (Rezatofighi et al.
2019), which measures the overlap itself and is the same for big and small boxes.

The box head predicts the centre and size as fractions of the image (sigmoids), so its
box is always a proper one inside the canvas. The baselines know everything about the
boxes except where this one is: the mean training box, and a box of the mean size
centred in the image; the class baseline is the most frequent training class. With
several objects one box per image no longer works: that is what the anchors of the
SSD and the proposals of R-CNN (the other experiments) are for.
"""

import functools
import os

import keras
import numpy as np
from keras import layers, ops

from apps.detect import experiment
from core import export
from losses import SmoothL1Loss

EXPORT_NAME = "localize"       # saved_models/detect_localize/
BOX_LOSSES = ("smooth_l1", "giou")


@keras.saving.register_keras_serializable(package="detect")
class CentreSizeToCorners(keras.layers.Layer):
    """(B, 4) centre x, centre y, width, height as fractions of the image -> xyxy pixel box."""

    def __init__(self, image_size, **kwargs):
        super().__init__(**kwargs)
        self.image_size = int(image_size)

    def call(self, fractions):
        centre, size = fractions[:, :2], fractions[:, 2:]
        return ops.concatenate([centre - size / 2, centre + size / 2], axis=-1) * float(self.image_size)

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size}


def generalized_iou(a, b):
    """GIoU of paired xyxy boxes (..., 4): IoU minus the share of the smallest enclosing box
    that neither covers (Rezatofighi et al. 2019); in (-1, 1], 1 for equal boxes."""
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    low, high = ops.maximum(a[..., :2], b[..., :2]), ops.minimum(a[..., 2:], b[..., 2:])
    overlap = ops.prod(ops.maximum(high - low, 0.0), axis=-1)
    union = area_a + area_b - overlap
    hull = ops.prod(ops.maximum(a[..., 2:], b[..., 2:]) - ops.minimum(a[..., :2], b[..., :2]), axis=-1)
    return overlap / ops.maximum(union, 1e-6) - (hull - union) / ops.maximum(hull, 1e-6)


@keras.saving.register_keras_serializable(package="detect")
class BoxLoss(keras.losses.Loss):
    """Box loss of pixel xyxy boxes: smooth L1 on the corners / image side, or 1 - GIoU."""

    def __init__(self, image_size, kind="smooth_l1", beta=1.0 / 9.0, name="box_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if kind not in BOX_LOSSES:
            raise ValueError(f"unknown box loss '{kind}'; choose one of {', '.join(BOX_LOSSES)}")
        self.image_size, self.kind, self.beta = int(image_size), kind, float(beta)
        self.smooth_l1 = SmoothL1Loss(beta=self.beta, reduction=None)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        if self.kind == "giou":
            return 1.0 - generalized_iou(y_true, y_pred)
        return self.smooth_l1(y_true / self.image_size, y_pred / self.image_size)

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size, "kind": self.kind, "beta": self.beta}


def localizer(image_size, num_classes):
    """images (B, S, S, 1) raw 0-255 -> [probabilities (B, C), box (B, 4) xyxy pixels]."""
    images = keras.Input((image_size, image_size, 1), name="images")
    x = layers.Rescaling(1.0 / 255.0, name="scale")(images)
    for i, filters in enumerate((8, 16, 32, 64)):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{i + 1}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    # Flatten, not global pooling: where the object is must survive to the box head.
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, activation="relu", name="fc")(x)
    probabilities = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    fractions = layers.Dense(4, activation="sigmoid", name="centre_size")(x)
    box = CentreSizeToCorners(image_size, name="box")(fractions)
    return keras.Model(images, [probabilities, box], name="localizer")


def train(scenes, num_classes, *, box_loss="smooth_l1", box_weight=1.0, epochs=8, batch_size=32,
          learning_rate=2e-3, seed=0):
    """A fresh localizer trained on single-object scenes (class and box of object 0); the
    validation split, when `scenes` has one, is scored after each epoch."""
    keras.utils.set_random_seed(seed)
    size = scenes["train"]["image"].shape[1]
    model = localizer(size, num_classes)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=["sparse_categorical_crossentropy", BoxLoss(size, box_loss)], loss_weights=[1.0, box_weight])

    def xy(split):
        s = scenes[split]
        return s["image"].astype(np.float32), [s["classes"][:, 0], s["boxes"][:, 0]]

    validation = xy("validation") if "validation" in scenes else None
    model.fit(*xy("train"), validation_data=validation, batch_size=batch_size, epochs=epochs, verbose=2)
    return model


def paired_iou(a, b):
    """IoU of box a[i] with box b[i] (xyxy, (N, 4) each)."""
    overlap = np.prod(np.clip(np.minimum(a[:, 2:], b[:, 2:]) - np.maximum(a[:, :2], b[:, :2]), 0, None), axis=1)
    union = np.prod(a[:, 2:] - a[:, :2], axis=1) + np.prod(b[:, 2:] - b[:, :2], axis=1) - overlap
    return overlap / np.maximum(union, 1e-9)


def scores(classes, boxes, scenes):
    """Class accuracy, mean IoU and the share with IoU >= 0.5 against each scene's object."""
    iou = paired_iou(np.asarray(boxes, np.float64), scenes["boxes"][:, 0].astype(np.float64))
    accuracy = float(np.mean(np.asarray(classes) == scenes["classes"][:, 0])) if classes is not None else None
    return {"accuracy": accuracy, "mean_iou": float(iou.mean()), "iou50": float(np.mean(iou >= 0.5)), "iou": iou}


def baselines(train_scenes, test_scenes):
    """Scores of the mean training box, the mean-size box centred in the image, and the majority class."""
    n, size = len(test_scenes["image"]), test_scenes["image"].shape[1]
    boxes = train_scenes["boxes"][:, 0]
    mean_box = boxes.mean(axis=0)
    w, h = (boxes[:, 2:] - boxes[:, :2]).mean(axis=0)
    centred = np.array([size / 2 - w / 2, size / 2 - h / 2, size / 2 + w / 2, size / 2 + h / 2])
    majority = np.full(n, np.bincount(train_scenes["classes"][:, 0]).argmax())
    return {"mean box, majority class": scores(majority, np.tile(mean_box, (n, 1)), test_scenes),
            "centred mean-size box": scores(None, np.tile(centred, (n, 1)), test_scenes)}


def parity(kind, reference, candidate, image_size):
    """export_model's check: probabilities within TOLERANCES[kind], the box within that share of the image side."""
    probabilities = float(np.abs(reference["probabilities"] - candidate["probabilities"]).max())
    box = float(np.abs(reference["box"] - candidate["box"]).max()) / image_size
    worst = max(probabilities, box) if np.isfinite([probabilities, box]).all() else float("nan")
    problem = None if worst <= export.TOLERANCES[kind] else f"by {worst:.3g} (tolerance {export.TOLERANCES[kind]})"
    return {"max_abs_diff": worst, "probabilities": probabilities, "box_pixels": box * image_size}, problem


def export_localizer(model, sample_images, calibration_images, export_dir="saved_models", version=None,
                     kinds=("float", "dynamic")):
    """SavedModel (images -> probabilities, box) + TFLite files of `kinds` and int8 (calibrated on
    `calibration_images`, training scenes), parity-checked on `sample_images`: every file within
    TOLERANCES[kind] (int8: 0.15 of a probability, the box within 0.15 of the image side)."""
    size = int(model.inputs[0].shape[1])
    calibration = np.asarray(calibration_images, np.float32)
    report = export.export_model(model, export.export_folder("detect", EXPORT_NAME, export_dir),
                                 input_names=["images"],
                                 output_names=["probabilities", "box"],
                                 sample_inputs={"images": np.asarray(sample_images, np.float32)},
                                 representative_data=[calibration[i:i + 8] for i in range(0, len(calibration), 8)],
                                 class_names=experiment.CLASS_NAMES, version=version, kinds=kinds,
                                 check=functools.partial(parity, image_size=size))
    print(f"wrote SavedModel {report['saved_model']} (signature '{export.SIGNATURE}': images -> probabilities, box)")
    for kind, path in report["tflite"].items():
        p = report["parity"][kind]
        print(f"wrote TFLite {path} (vs SavedModel: probabilities within {p['probabilities']:.2g}, "
              f"box within {p['box_pixels']:.2g} px)")
    return report


# (scene counts, epochs) of the default run and of --small.
BUDGETS = {False: (dict(train=3000, validation=300, test=500), 10),
           True: (dict(train=800, validation=100, test=200), 4)}


def run(*, run_dir=os.path.join("runs", "detect", "localize"), small=False, seed=0, export_dir="saved_models",
        box_weight=1.0):
    folder = experiment.run_folder(run_dir)
    counts, epochs = BUDGETS[bool(small)]
    scenes = experiment.make_scenes(experiment.SINGLE_OBJECT, counts, seed)
    test, num_classes = scenes["test"], len(experiment.CLASS_NAMES)
    results, models, validation_iou = dict(baselines(scenes["train"], test)), {}, {}
    for kind in BOX_LOSSES:
        print(f"training the localizer with cross-entropy + {box_weight:g} x {kind} box loss")
        models[kind] = train(scenes, num_classes, box_loss=kind, box_weight=box_weight, epochs=epochs, seed=seed)
        probabilities, boxes = models[kind].predict(test["image"].astype(np.float32), verbose=0)
        name = f"CNN, {kind} box loss"
        results[name] = {**scores(probabilities.argmax(axis=1), boxes, test), "boxes": boxes,
                         "classes": probabilities.argmax(axis=1)}
        _, val_boxes = models[kind].predict(scenes["validation"]["image"].astype(np.float32), verbose=0)
        validation_iou[kind] = scores(None, val_boxes, scenes["validation"])["mean_iou"]
    experiment.print_table(
        f"single-object classification + localisation on {len(test['image'])} test scenes "
        f"({counts['train']} training scenes, 64x64, {epochs} epochs; loss = cross-entropy + {box_weight:g} x box "
        f"loss; chance accuracy 0.1)",
        ["method", "class accuracy", "mean IoU", "IoU >= 0.5"],
        [[name, "-" if r["accuracy"] is None else r["accuracy"], r["mean_iou"], r["iou50"]]
         for name, r in results.items()])
    png = draw(test, results, os.path.join(folder, "localize.png"))
    print(f"wrote {png}")
    chosen = max(validation_iou, key=validation_iou.get)  # picked on validation scenes, not on the test ones
    print(f"exporting the localizer trained with the {chosen} box loss (validation mean IoU "
          f"{validation_iou[chosen]:.3f})")
    report = export_localizer(models[chosen], test["image"][:16], scenes["train"]["image"][:32], export_dir)
    return {"results": results, "export": report, "pngs": [png]}


def draw(test, results, path, count=8):
    """PNG: test scenes with the true box (green, dashed) and each localizer's box and class."""
    import matplotlib.pyplot as plt

    from core.plots import save_figure

    learned = [name for name in results if name.startswith("CNN")]
    fig, axes = plt.subplots(len(learned), count, figsize=(2.1 * count, 2.4 * len(learned)), squeeze=False)
    for row, name in enumerate(learned):
        r = results[name]
        for i in range(count):
            ax = axes[row, i]
            ax.imshow(test["image"][i, ..., 0], cmap="gray", vmin=0, vmax=255)
            experiment.draw_box(ax, test["boxes"][i, 0], "lime", style="--")
            predicted = experiment.CLASS_NAMES[int(r["classes"][i])]
            experiment.draw_box(ax, r["boxes"][i], "red")
            right = r["classes"][i] == test["classes"][i, 0]
            truth = "" if right else f" ({experiment.CLASS_NAMES[int(test['classes'][i, 0])]})"
            ax.set_title(f"{predicted}{truth}, IoU {r['iou'][i]:.2f}", fontsize=7, color="black" if right else "red")
            ax.set_xticks([]), ax.set_yticks([])
        axes[row, 0].set_ylabel(name, fontsize=7)
    fig.suptitle("true box (green, dashed) vs predicted box (red) and class (in red: wrong, the true one in brackets)",
                 fontsize=9)
    return save_figure(fig, path)
