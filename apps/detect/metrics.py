"""COCO-style mean average precision of box detections.

For each class and IoU threshold, the detections of all images are sorted by
score (highest first) and matched greedily: a detection is a true positive when
some not-yet-matched ground-truth box of its class and image overlaps it with
IoU >= threshold (the best such box is taken), else a false positive -- so a
duplicate of a found object is a false positive. AP is the area under the
precision envelope sampled at the 101 recall points 0, 0.01, ..., 1 (COCO's
interpolation; a recall level never reached counts precision 0). mAP averages
AP over the classes that have ground truth; mAP@[.5:.95] averages mAP over the
IoU thresholds 0.5, 0.55, ..., 0.95.
"""

import numpy as np

from apps.detect.boxes import iou_matrix

COCO_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def average_precision(scores, is_true_positive, num_ground_truth):
    """101-point interpolated AP of one class from its detections' scores and TP flags."""
    if num_ground_truth == 0:
        return None
    if len(scores) == 0:
        return 0.0
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    tp = np.asarray(is_true_positive, bool)[order]
    true_positives = np.cumsum(tp)
    recall = true_positives / num_ground_truth
    precision = true_positives / np.arange(1, len(tp) + 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]  # best precision at this recall or beyond
    index = np.searchsorted(recall, RECALL_POINTS, side="left")  # first detection reaching each recall level
    sampled = np.where(index < len(tp), envelope[np.minimum(index, len(tp) - 1)], 0.0)
    return float(np.mean(sampled))


def _match(detections, ground_truths, ious, class_id, threshold):
    """Scores, TP flags and the ground-truth count of one class over all images."""
    scores, flags, count = [], [], 0
    for det, gt, iou in zip(detections, ground_truths, ious):
        is_gt = gt["classes"] == class_id
        count += int(is_gt.sum())
        mine = np.flatnonzero(det["classes"] == class_id)
        mine = mine[np.argsort(-det["scores"][mine], kind="stable")]
        taken = ~is_gt  # other classes' objects can never be matched
        for d in mine:
            candidates = np.where(taken, -1.0, iou[d])
            best = int(np.argmax(candidates)) if len(candidates) else -1
            hit = best >= 0 and candidates[best] >= threshold
            if hit:
                taken[best] = True
            scores.append(det["scores"][d])
            flags.append(hit)
    return scores, flags, count


def mean_average_precision(detections, ground_truths, num_classes, thresholds=(0.5,)):
    """mAP averaged over `thresholds`, and the AP of each class at each threshold.

    detections: per image a dict boxes (n, 4) xyxy, classes (n,), scores (n,);
    ground_truths: per image a dict boxes (k, 4), classes (k,).
    Returns (mAP, {threshold: [AP of class c or None when it has no ground truth]}).
    """
    if len(detections) != len(ground_truths):
        raise ValueError(f"{len(detections)} detection lists for {len(ground_truths)} images")
    # IoU of every detection with every object, once per image (keras-cv's compute_iou).
    ious = [iou_matrix(det["boxes"], gt["boxes"]) for det, gt in zip(detections, ground_truths)]
    per_threshold = {}
    for threshold in thresholds:
        per_threshold[float(threshold)] = [average_precision(*_match(detections, ground_truths, ious, c, threshold))
                                           for c in range(num_classes)]
    means = [np.mean([ap for ap in aps if ap is not None]) for aps in per_threshold.values()
             if any(ap is not None for ap in aps)]
    return (float(np.mean(means)) if means else 0.0), per_threshold


def detection_metrics(detections, ground_truths, num_classes):
    """mAP@0.5 and mAP@[.5:.95], the two numbers every report of this app shows."""
    map50, per_class = mean_average_precision(detections, ground_truths, num_classes, (0.5,))
    map_coco, _ = mean_average_precision(detections, ground_truths, num_classes, COCO_THRESHOLDS)
    return {"map50": map50, "map50_95": map_coco, "ap50_per_class": per_class[0.5]}
