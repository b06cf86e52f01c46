"""Experiment: the sliding-window detector, and why anchors replaced it.

Before single-shot detectors, detection meant running a classifier (object class or
background) over every window of a grid, at a few window sizes and aspect ratios, and
keeping the best-scoring windows after non-max suppression (Viola-Jones, HOG + SVM,
OverFeat). Two costs grow together: the windows must be dense enough that some window
fits each object (IoU >= 0.5), and every window is a full forward pass of the classifier.

An SSD computes the feature maps once and reads its ~1,000 anchors off them with a 3x3 conv:
the work per anchor is a few multiply-adds, not a whole network. The experiment trains the
window classifier (apps/detect/patches.py) on windows of the training scenes and the app's
SSD on the same scenes, and compares mAP@0.5 and cost: windows x FLOPs per window vs one
SSD forward pass, and milliseconds per image on this machine.
"""

import os
import time

import numpy as np

from apps.detect import experiment, patches
from apps.detect.data import ground_truths
from apps.detect.metrics import detection_metrics
from apps.detect.selective_search import proposal_recall

SIDES = (20, 28, 36)            # window side (geometric mean of width and height) in pixels
RATIOS = (0.5, 1.0, 2.0)        # height / width, as the SSD's anchors
STRIDE_FRACTION = 0.25          # stride = a quarter of the window side
NMS_IOU = 0.3


def window_shapes(sides=SIDES, ratios=RATIOS, stride_fraction=STRIDE_FRACTION):
    """(width, height, stride) of each window shape, whole pixels."""
    shapes = []
    for side in sides:
        stride = max(1, int(round(side * stride_fraction)))
        for ratio in ratios:
            shapes.append((int(round(side / np.sqrt(ratio))), int(round(side * np.sqrt(ratio))), stride))
    return shapes


def expected_count(image_size, shapes):
    """Windows that fit inside the image: per shape (floor((S - w) / stride) + 1) x (floor((S - h) / stride) + 1)."""
    return sum(((image_size - w) // s + 1) * ((image_size - h) // s + 1) for w, h, s in shapes if w <= image_size
               and h <= image_size)


def enumerate_windows(image_size, shapes):
    """(N, 4) xyxy windows inside the image: each shape at every stride step, rows then columns."""
    windows = []
    for w, h, stride in shapes:
        if w > image_size or h > image_size:
            continue
        ys, xs = np.meshgrid(np.arange(0, image_size - h + 1, stride), np.arange(0, image_size - w + 1, stride),
                             indexing="ij")
        x0, y0 = xs.ravel(), ys.ravel()
        windows.append(np.stack([x0, y0, x0 + w, y0 + h], axis=1))
    return np.concatenate(windows).astype(np.float32)


def train_window_classifier(scenes, windows, num_classes, *, epochs, learning_rate=2e-3, seed=0):
    """The patch classifier trained on the grid's windows of the training scenes."""
    rng = np.random.default_rng(seed)
    x, y = patches.training_crops(scenes, lambda i: windows, num_classes, rng)
    print(f"window classifier: {len(y)} training crops ({(y < num_classes).sum()} objects, "
          f"{(y == num_classes).sum()} background)")
    return patches.train_classifier(x, y, num_classes, epochs=epochs, learning_rate=learning_rate, seed=seed)


def detect(classifier, images, windows, num_classes):
    """Score every window of every image, then class-agnostic NMS over each window's best class (as
    the SSD's), at IoU 0.3: neighbouring windows of different shapes overlap less than the SSD's
    regressed boxes do, and the SSD's 0.5 leaves several windows per object."""
    boxes = [windows] * len(images)
    return patches.detections_from_scores(boxes, patches.classify_boxes(classifier, images, boxes), num_classes,
                                          iou_threshold=NMS_IOU)


# (scene counts, window-classifier epochs, SSD epochs) of the default run and of --small.
BUDGETS = {False: (dict(train=500, validation=64, test=200), 5, 10),
           True: (dict(train=200, validation=32, test=48), 3, 3)}


def run(*, run_dir=os.path.join("runs", "detect", "sliding_window"), small=False, seed=0):
    from apps.detect import app

    folder = experiment.run_folder(run_dir)
    counts, window_epochs, ssd_epochs = BUDGETS[bool(small)]
    scenes = experiment.make_scenes(experiment.MULTI_OBJECT, counts, seed)
    test, size, num_classes = scenes["test"], experiment.MULTI_OBJECT.size, len(experiment.CLASS_NAMES)
    shapes = window_shapes()
    windows = enumerate_windows(size, shapes)
    coverage = proposal_recall([windows] * len(test["image"]), test)[0]
    print(f"{len(windows)} windows per {size}x{size} image ({len(SIDES)} sides x {len(RATIOS)} aspect ratios, "
          f"stride = side / {1 / STRIDE_FRACTION:g}); {coverage:.1%} of the test objects have a window with IoU >= 0.5")

    start = time.time()
    classifier = train_window_classifier(scenes["train"], windows, num_classes, epochs=window_epochs, seed=seed)
    window_seconds = time.time() - start
    images = test["image"].astype(np.float32)
    found = detect(classifier, images, windows, num_classes)
    window_ms = experiment.milliseconds_per_image(lambda x: detect(classifier, x, windows, num_classes), images)
    ssd, ssd_seconds = experiment.train_app_detector("ssd", scenes, epochs=ssd_epochs, seed=seed)
    ssd_found = app.detect(ssd, images)
    ssd_ms = experiment.milliseconds_per_image(lambda x: ssd.predict(x, batch_size=64, verbose=0), images)
    truths = ground_truths(test)
    scores = {"sliding windows": detection_metrics(found, truths, num_classes),
              "SSD (the app's)": detection_metrics(ssd_found, truths, num_classes),
              "random boxes": detection_metrics(app.random_baseline(test, num_classes, seed), truths, num_classes)}
    window_flops, ssd_flops = experiment.count_flops(classifier), experiment.count_flops(ssd)
    cost = {"sliding windows": (len(windows), window_flops * len(windows), window_ms, window_seconds),
            "SSD (the app's)": (int(ssd.get_layer("decode").anchors.shape[0]), ssd_flops, ssd_ms, ssd_seconds),
            "random boxes": (10, 0, float("nan"), 0.0)}
    experiment.print_table(
        f"sliding windows vs SSD on {len(test['image'])} test scenes ({size}x{size}, 1-3 objects; "
        f"{counts['train']} training scenes; window classifier: {window_flops / 1e6:.2f} MFLOPs per window, "
        f"{window_epochs} epochs; SSD: {ssd_epochs} epochs, batch 16)",
        ["method", "boxes scored", "MFLOPs / image", "ms / image", "training s", "mAP@0.5", "mAP@[.5:.95]"],
        [[name, cost[name][0], cost[name][1] / 1e6, cost[name][2], cost[name][3], s["map50"], s["map50_95"]]
         for name, s in scores.items()])
    print(f"sliding windows cost {cost['sliding windows'][1] / ssd_flops:.0f}x the FLOPs of one SSD forward pass")
    png = draw(test, windows, shapes, found, ssd_found, scores, os.path.join(folder, "sliding_window.png"))
    print(f"wrote {png}")
    return {"scores": scores, "cost": cost, "coverage": coverage, "num_windows": len(windows), "pngs": [png]}


def draw(test, windows, shapes, found, ssd_found, scores, path, count=4, min_score=0.5):
    """PNG: the window shapes on a scene (top left) and sliding-window vs SSD detections."""
    import matplotlib.pyplot as plt

    from core.plots import save_figure

    fig, axes = plt.subplots(2, count + 1, figsize=(2.4 * (count + 1), 5))
    ax = axes[0, 0]
    ax.imshow(np.zeros_like(test["image"][0, ..., 0]), cmap="gray", vmin=0, vmax=255)
    centre = test["image"].shape[1] / 2
    for k, (w, h, stride) in enumerate(shapes):  # each shape once, centred, and one stride to its right (dashed)
        box = np.array([centre - w / 2, centre - h / 2, centre + w / 2, centre + h / 2])
        experiment.draw_box(ax, box, f"C{k // len(RATIOS)}")
        if k % len(RATIOS) == 1:
            experiment.draw_box(ax, box + [stride, 0, stride, 0], f"C{k // len(RATIOS)}", style=":")
    ax.set_title(f"{len(shapes)} window shapes, {len(windows)} windows", fontsize=8)
    axes[1, 0].axis("off")
    axes[1, 0].text(0, 0.5, "\n".join(f"{name}: mAP@0.5 {s['map50']:.3f}" for name, s in scores.items()),
                    fontsize=8, va="center")
    for row, (name, detections) in enumerate((("sliding windows", found), ("SSD", ssd_found))):
        for i in range(count):
            experiment.show_detections(axes[row, i + 1], test, i, detections[i], min_score)
        axes[row, 1].set_title(f"{name} (scores >= {min_score})", fontsize=8, loc="left")
    for ax in axes.ravel():
        ax.set_xticks([]), ax.set_yticks([])
    return save_figure(fig, path)
