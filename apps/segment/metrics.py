"""Segmentation metrics from the confusion matrix.

matrix[t, p] counts the pixels of true class t predicted as class p. Then, per class c,
  TP_c = matrix[c, c],  true_c = Σ_p matrix[c, p],  predicted_c = Σ_t matrix[t, c]
and
  pixel accuracy       Σ_c TP_c / Σ matrix
  class accuracy       TP_c / true_c                (per-class recall)
  mean pixel accuracy  mean of the class accuracies
  IoU_c                TP_c / (true_c + predicted_c - TP_c)
  mean IoU             mean of the IoU_c
A class that never occurs (true_c = 0) has no accuracy, and one that neither occurs nor is
predicted (union 0) has no IoU: both are NaN and left out of the means, as keras.metrics.MeanIoU does.
"""

import numpy as np

from core.metrics import confusion_matrix  # noqa: F401  (the counting the metrics below start from)


def background_matrix(matrix):
    """The confusion matrix of the trivial baseline that calls every pixel background (class 0)."""
    baseline = np.zeros_like(matrix)
    baseline[:, 0] = matrix.sum(axis=1)
    return baseline


def _ratio(numerator, denominator):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1), np.nan)


def segmentation_report(matrix):
    """Pixel accuracy, per-class and mean pixel accuracy, per-class IoU and mean IoU."""
    matrix = np.asarray(matrix, np.float64)
    true_positives = np.diag(matrix)
    true_counts, predicted_counts = matrix.sum(axis=1), matrix.sum(axis=0)
    class_accuracy = _ratio(true_positives, true_counts)
    iou = _ratio(true_positives, true_counts + predicted_counts - true_positives)
    return {"pixel_accuracy": float(true_positives.sum() / max(matrix.sum(), 1)),
            "class_accuracy": class_accuracy,
            "mean_pixel_accuracy": float(np.nanmean(class_accuracy)) if np.isfinite(class_accuracy).any() else 0.0,
            "iou": iou,
            "mean_iou": float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0}


def as_json(report, class_names):
    """The report with per-class numbers keyed by class name (NaN -> null)."""
    def number(v):
        return None if not np.isfinite(v) else float(v)

    return {"pixel_accuracy": report["pixel_accuracy"], "mean_pixel_accuracy": report["mean_pixel_accuracy"],
            "mean_iou": report["mean_iou"],
            "class_accuracy": {n: number(v) for n, v in zip(class_names, report["class_accuracy"])},
            "iou": {n: number(v) for n, v in zip(class_names, report["iou"])}}
