"""Experiment: classic R-CNN (Girshick, Donahue, Darrell & Malik 2014) on selective-search
proposals, against the app's two-stage detector whose region proposal network (RPN) learns
the proposals instead (Faster R-CNN, Ren et al. 2015).

R-CNN in three steps, each a separate program in 2014:
  1. selective search proposes boxes (apps/detect/selective_search.py; ~2,000 per
     photo, up to MAX_PROPOSALS on these small scenes);
  2. each proposal is cropped, warped to a fixed size and classified by a CNN with a
     background class (apps/detect/patches.py; the paper fine-tuned AlexNet, then
     trained one linear SVM per class on its features -- here the softmax decides);
  3. per class, non-max suppression (IoU 0.3) keeps the best of overlapping boxes.
The original also regressed box corrections from the CNN features; left out here.

The costs that Fast and Faster R-CNN removed show in the table: a CNN forward pass per
proposal (not one per image), and a proposal step that runs on the CPU outside the
network. Proposal recall -- the share of objects that some proposal covers with IoU >=
0.5 -- bounds what any second stage can find; the PNG plots it against the number of
proposals for selective search, the RPN and random boxes.
"""

import os
import time

import keras
import numpy as np
from keras import layers

from apps.detect import experiment, patches
from apps.detect.boxes import random_boxes
from apps.detect.data import ground_truths
from apps.detect.layers import Detections
from apps.detect.metrics import detection_metrics
from apps.detect.selective_search import proposal_recall, selective_search
from core import export

EXPORT_NAME = "rcnn_classic"   # saved_models/detect_rcnn_classic/
MAX_PROPOSALS = 100
NMS_IOU = 0.3                     # R-CNN's per-class NMS threshold
RECALL_COUNTS = (1, 2, 5, 10, 16, 25, 50, 100)


def propose(images, max_proposals=MAX_PROPOSALS, **options):
    """Selective-search proposals of each image, and the seconds spent per image."""
    start = time.perf_counter()
    proposals = [selective_search(image, max_proposals=max_proposals, **options) for image in images]
    return proposals, (time.perf_counter() - start) / max(len(images), 1)


def train(scenes, proposals, num_classes, *, epochs, seed=0):
    """The crop classifier trained on the proposals of the training scenes (+ the objects' boxes)."""
    rng = np.random.default_rng(seed)
    x, y = patches.training_crops(scenes, lambda i: proposals[i], num_classes, rng)
    print(f"R-CNN crop classifier: {len(y)} training crops ({(y < num_classes).sum()} objects, "
          f"{(y == num_classes).sum()} background)")
    return patches.train_classifier(x, y, num_classes, epochs=epochs, seed=seed)


def detect(classifier, images, proposals, num_classes):
    """Classify the warped proposals, then per-class NMS (IoU 0.3)."""
    probabilities = patches.classify_boxes(classifier, images, proposals)
    return patches.detections_from_scores(proposals, probabilities, num_classes, per_class=True, iou_threshold=NMS_IOU)


def rpn_proposals(inference, images, count=MAX_PROPOSALS):
    """The top `count` proposals of the two-stage detector's RPN after its NMS (IoU 0.7), per image
    (the same path as its inference model, which keeps 16)."""
    inputs = keras.Input(inference.inputs[0].shape[1:], name="images")
    _, c3, c4 = inference.get_layer("backbone")(inputs)
    rpn = inference.get_layer("rpn_head")([c3, c4])
    boxes = inference.get_layer("decode_proposals")(rpn[..., :4])
    objectness = layers.Activation("sigmoid")(rpn[..., 4:])
    found = Detections(count, iou_threshold=0.7, score_threshold=0.0)(boxes, objectness)
    model = keras.Model(inputs, [found["boxes"], found["num_detections"]])
    boxes, counts = model.predict(np.asarray(images, np.float32), batch_size=64, verbose=0)
    return [b[:int(n)] for b, n in zip(boxes, counts)]


def calibration_patches(images, proposals, scenes=8, per_scene=8):
    """Warped crops of the first `per_scene` proposals of the first `scenes` images: int8's calibration patches."""
    boxes = [np.asarray(p[:per_scene]) for p in proposals[:scenes]]
    index = np.concatenate([np.full(len(b), i) for i, b in enumerate(boxes)])
    return patches.warp(images, np.concatenate(boxes), index)


def export_classifier(classifier, sample_patches, calibration, export_dir="saved_models", version=None,
                      kinds=("float", "dynamic")):
    """SavedModel (patches -> probabilities over the classes + background) + TFLite files of `kinds` and int8
    (calibrated on `calibration`, patches of training scenes), parity-checked on `sample_patches`: every
    probability within TOLERANCES[kind]."""
    calibration = np.asarray(calibration, np.float32)
    report = export.export_model(classifier, export.export_folder("detect", EXPORT_NAME, export_dir),
                                 input_names=["patches"],
                                 output_names=["probabilities"],
                                 sample_inputs={"patches": np.asarray(sample_patches, np.float32)},
                                 representative_data=[calibration[i:i + 16] for i in range(0, len(calibration), 16)],
                                 class_names=experiment.CLASS_NAMES + ["background"], version=version, kinds=kinds)
    print(f"wrote SavedModel {report['saved_model']} (signature '{export.SIGNATURE}': patches "
          f"(B, {patches.PATCH}, {patches.PATCH}, 1) 0-255 -> probabilities)")
    for kind, path in report["tflite"].items():
        print(f"wrote TFLite {path} (max |difference| from the SavedModel {report['max_abs_diff'][kind]:.2g})")
    return report


# (scene counts, crop-classifier epochs, two-stage detector epochs) of the default run and of --small.
BUDGETS = {False: (dict(train=500, validation=64, test=200), 6, 8),
           True: (dict(train=200, validation=32, test=48), 4, 2)}


def run(*, run_dir=os.path.join("runs", "detect", "rcnn_classic"), small=False, seed=0, export_dir="saved_models"):
    from apps.detect import app

    folder = experiment.run_folder(run_dir)
    counts, crop_epochs, two_stage_epochs = BUDGETS[bool(small)]
    scenes = experiment.make_scenes(experiment.MULTI_OBJECT, counts, seed)
    test, num_classes = scenes["test"], len(experiment.CLASS_NAMES)
    images = test["image"].astype(np.float32)
    print(f"selective search on {counts['train'] + counts['test']} scenes ...")
    train_proposals, _ = propose(scenes["train"]["image"])
    test_proposals, search_seconds = propose(test["image"])
    start = time.time()
    classifier = train(scenes["train"], train_proposals, num_classes, epochs=crop_epochs, seed=seed)
    crop_seconds = time.time() - start
    found = detect(classifier, images, test_proposals, num_classes)
    classify_ms = experiment.milliseconds_per_image(
        lambda x: detect(classifier, x, test_proposals[:len(x)], num_classes), images)
    two_stage, two_stage_seconds = experiment.train_app_detector("rcnn", scenes, epochs=two_stage_epochs,
                                                                  seed=seed)
    two_stage_found = app.detect(two_stage, images)
    two_stage_ms = experiment.milliseconds_per_image(lambda x: two_stage.predict(x, batch_size=64, verbose=0), images)
    rng = np.random.default_rng(seed)
    sizes = scenes["train"]["boxes"][scenes["train"]["classes"] >= 0]
    recall = {"selective search": proposal_recall(test_proposals, test, counts=RECALL_COUNTS),
              "RPN (the app's rcnn)": proposal_recall(rpn_proposals(two_stage, images), test, counts=RECALL_COUNTS),
              "random boxes": proposal_recall([random_boxes(rng, MAX_PROPOSALS, images.shape[1], sizes)
                                               for _ in images], test, counts=RECALL_COUNTS)}
    truths = ground_truths(test)
    metrics = {"R-CNN (selective search)": detection_metrics(found, truths, num_classes),
               "two-stage with RPN (the app's rcnn)": detection_metrics(two_stage_found, truths, num_classes),
               "random boxes": detection_metrics(app.random_baseline(test, num_classes, seed), truths, num_classes)}
    mean_proposals = float(np.mean([len(p) for p in test_proposals]))
    timing = {"R-CNN (selective search)": (f"{1000 * search_seconds:.0f} + {classify_ms:.0f}", crop_seconds),
              "two-stage with RPN (the app's rcnn)": (f"{two_stage_ms:.1f}", two_stage_seconds),
              "random boxes": ("-", 0.0)}
    experiment.print_table(
        f"classic R-CNN vs the two-stage detector on {len(images)} test scenes ({counts['train']} training scenes; "
        f"R-CNN: {mean_proposals:.0f} proposals per image, each a CNN pass, crop classifier {crop_epochs} epochs; "
        f"two-stage: {two_stage_epochs} epochs, batch 16)",
        ["method", "mAP@0.5", "mAP@[.5:.95]", "ms / image (proposals + rest)", "training s"],
        [[name, m["map50"], m["map50_95"], *timing[name]] for name, m in metrics.items()])
    index = {n: k for k, n in enumerate(RECALL_COUNTS)}
    experiment.print_table("proposal recall (share of test objects with a proposal of IoU >= 0.5) by proposals "
                           "per image", ["proposals", *[str(n) for n in (5, 10, 16, 50, 100)]],
                           [[name, *[r[index[n]] for n in (5, 10, 16, 50, 100)]] for name, r in recall.items()])
    png = draw(test, test_proposals, found, two_stage_found, recall, os.path.join(folder, "rcnn_classic.png"))
    print(f"wrote {png}")
    sample = patches.warp(test["image"], test_proposals[0][:16], np.zeros(len(test_proposals[0][:16])))
    report = export_classifier(classifier, sample, calibration_patches(scenes["train"]["image"], train_proposals),
                               export_dir)
    return {"metrics": metrics, "recall": recall, "export": report, "pngs": [png]}


def draw(test, proposals, found, two_stage_found, recall, path, count=3, shown=20):
    """PNG: proposal recall curves; selective-search proposals; R-CNN vs two-stage detections."""
    import matplotlib.pyplot as plt

    from core.plots import save_figure

    fig, axes = plt.subplots(3, count + 1, figsize=(2.5 * (count + 1), 7.5))
    ax = axes[0, 0]
    for name, values in recall.items():
        ax.plot(RECALL_COUNTS, values, "o-", label=name, markersize=3)
    ax.set_xscale("log")
    ax.set_xlabel("proposals per image", fontsize=8)
    ax.set_ylabel("recall at IoU 0.5", fontsize=8)
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
    for ax in axes[1:, 0]:
        ax.axis("off")
    for i in range(count):
        ax = axes[0, i + 1]
        ax.imshow(test["image"][i, ..., 0], cmap="gray", vmin=0, vmax=255)
        for box in proposals[i][:shown]:
            experiment.draw_box(ax, box, "orange")
        ax.set_title(f"first {shown} of {len(proposals[i])} proposals", fontsize=7)
        experiment.show_detections(axes[1, i + 1], test, i, found[i])
        experiment.show_detections(axes[2, i + 1], test, i, two_stage_found[i])
    axes[1, 1].set_title("classic R-CNN (scores >= 0.5)", fontsize=8, loc="left")
    axes[2, 1].set_title("two-stage with RPN (scores >= 0.5)", fontsize=8, loc="left")
    for ax in axes[:, 1:].ravel():
        ax.set_xticks([]), ax.set_yticks([])
    return save_figure(fig, path)
