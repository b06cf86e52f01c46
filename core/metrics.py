"""Counting metrics shared by the apps: the confusion matrix and what it gives per class."""

import numpy as np


def confusion_matrix(truth, prediction, num_classes):
    """(K, K) int64 counts, rows = true class, columns = predicted, of integer labels of any (equal) shape."""
    truth = np.asarray(truth, np.int64).ravel()
    prediction = np.asarray(prediction, np.int64).ravel()
    return np.bincount(truth * num_classes + prediction, minlength=num_classes ** 2).reshape(num_classes,
                                                                                            num_classes)


def classification_report(labels, predictions, num_classes):
    """Confusion matrix, accuracy, and per-class precision, recall and F1."""
    matrix = confusion_matrix(labels, predictions, num_classes)
    true_positives = np.diag(matrix).astype(np.float64)
    precision = true_positives / np.maximum(matrix.sum(axis=0), 1)
    recall = true_positives / np.maximum(matrix.sum(axis=1), 1)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    return {"confusion_matrix": matrix, "accuracy": true_positives.sum() / max(matrix.sum(), 1),
            "precision": precision, "recall": recall, "f1": f1}
