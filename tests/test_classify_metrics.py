"""Evaluation metrics beyond accuracy: per-class F1 and top-k error, against hand counts."""

import numpy as np
import pytest

from apps.classify import app


def test_f1_is_the_harmonic_mean_of_precision_and_recall():
    labels = np.array([0, 0, 1, 1, 2, 2])
    predictions = np.array([0, 1, 1, 1, 0, 0])
    report = app.classification_report(labels, predictions, 3)
    # class 0: precision 1/3, recall 1/2; class 1: 2/3, 1; class 2: never predicted, never right.
    np.testing.assert_allclose(report["f1"], [2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2), 2 * (2 / 3) / (5 / 3), 0.0])


def test_top_k_error_counts_the_true_class_outside_the_k_best():
    probabilities = np.array([[0.5, 0.3, 0.2], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3], [0.6, 0.3, 0.1]])
    labels = np.array([0, 1, 0, 2])
    assert app.top_k_error(labels, probabilities, 1) == pytest.approx(3 / 4)  # only example 0 is right
    assert app.top_k_error(labels, probabilities, 2) == pytest.approx(2 / 4)  # examples 2 and 3 still miss
    assert app.top_k_error(labels, probabilities, 3) == 0.0
