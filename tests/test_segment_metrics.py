"""Segmentation metrics and losses against hand counts, scikit-learn, Keras and NumPy formulas."""

import keras
import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, jaccard_score
from sklearn.metrics import confusion_matrix as sklearn_confusion_matrix

from apps.segment import metrics
from apps.segment.losses import ClassMeanDiceLoss, CrossEntropyDiceLoss, make_loss
from core.errors import UserError

# Two 2x3 label maps, counted by hand:
#   truth      prediction
#   0 0 1      0 1 1
#   1 2 2      1 2 0
TRUTH = np.array([[0, 0, 1], [1, 2, 2]])
PREDICTION = np.array([[0, 1, 1], [1, 2, 0]])
HAND_MATRIX = [[1, 1, 0],   # true 0: one right, one called 1
               [0, 2, 0],   # true 1: both right
               [1, 0, 1]]   # true 2: one called 0, one right


def test_confusion_matrix_and_report_against_hand_counts():
    matrix = metrics.confusion_matrix(TRUTH, PREDICTION, 3)
    np.testing.assert_array_equal(matrix, HAND_MATRIX)
    report = metrics.segmentation_report(matrix)
    assert report["pixel_accuracy"] == pytest.approx(4 / 6)
    np.testing.assert_allclose(report["class_accuracy"], [1 / 2, 2 / 2, 1 / 2])
    assert report["mean_pixel_accuracy"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    # IoU_c = TP / (true + predicted - TP): class 0: 1/(2+2-1), class 1: 2/(2+3-2), class 2: 1/(2+1-1)
    np.testing.assert_allclose(report["iou"], [1 / 3, 2 / 3, 1 / 2])
    assert report["mean_iou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)


def test_all_background_baseline_counts_every_pixel_as_class_0():
    baseline = metrics.background_matrix(np.array(HAND_MATRIX))
    np.testing.assert_array_equal(baseline, [[2, 0, 0], [2, 0, 0], [2, 0, 0]])
    report = metrics.segmentation_report(baseline)
    assert report["pixel_accuracy"] == pytest.approx(2 / 6)      # the background share
    np.testing.assert_allclose(report["iou"], [2 / 6, 0, 0])
    assert report["mean_iou"] == pytest.approx(2 / 6 / 3)
    assert report["mean_pixel_accuracy"] == pytest.approx(1 / 3)


def test_absent_classes_are_left_out_of_the_means_like_keras_mean_iou():
    truth, prediction = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])  # class 2 never occurs nor is predicted
    report = metrics.segmentation_report(metrics.confusion_matrix(truth, prediction, 3))
    assert np.isnan(report["iou"][2]) and np.isnan(report["class_accuracy"][2])
    assert report["mean_iou"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    keras_iou = keras.metrics.MeanIoU(num_classes=3)
    keras_iou.update_state(truth, prediction)
    assert report["mean_iou"] == pytest.approx(float(keras_iou.result()), abs=1e-6)
    assert metrics.as_json(report, ["a", "b", "c"])["iou"]["c"] is None


def test_metrics_match_scikit_learn_and_keras_on_random_label_maps():
    rng = np.random.default_rng(0)
    num_classes = 6
    truth = rng.integers(0, num_classes, (4, 16, 16))
    prediction = np.where(rng.random(truth.shape) < 0.6, truth, rng.integers(0, num_classes, truth.shape))
    matrix = metrics.confusion_matrix(truth, prediction, num_classes)
    np.testing.assert_array_equal(matrix, sklearn_confusion_matrix(truth.ravel(), prediction.ravel(),
                                                                   labels=range(num_classes)))
    report = metrics.segmentation_report(matrix)
    np.testing.assert_allclose(report["iou"], jaccard_score(truth.ravel(), prediction.ravel(), average=None))
    assert report["mean_pixel_accuracy"] == pytest.approx(balanced_accuracy_score(truth.ravel(), prediction.ravel()))
    assert report["pixel_accuracy"] == pytest.approx(np.mean(truth == prediction))
    keras_iou = keras.metrics.MeanIoU(num_classes=num_classes)
    keras_iou.update_state(truth, prediction)
    assert report["mean_iou"] == pytest.approx(float(keras_iou.result()), abs=1e-6)


def _random_batch(seed=0, shape=(2, 5, 5), num_classes=4):
    rng = np.random.default_rng(seed)
    truth = np.eye(num_classes, dtype=np.float32)[rng.integers(0, num_classes, shape)]
    logits = rng.normal(size=shape + (num_classes,))
    probabilities = (np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)).astype(np.float32)
    return truth, probabilities


def test_class_mean_dice_loss_against_the_numpy_formula():
    truth, probabilities = _random_batch()
    smooth = 1.0
    dice = [(2 * np.sum(truth[..., c] * probabilities[..., c]) + smooth)
            / (np.sum(truth[..., c]) + np.sum(probabilities[..., c]) + smooth) for c in range(truth.shape[-1])]
    expected = 1.0 - np.mean(dice)
    assert float(ClassMeanDiceLoss()(truth, probabilities)) == pytest.approx(expected, rel=1e-5)
    assert float(ClassMeanDiceLoss()(truth, truth)) == pytest.approx(0.0, abs=1e-6)  # a perfect prediction


def test_combined_loss_is_crossentropy_plus_dice():
    truth, probabilities = _random_batch(seed=1)
    crossentropy = np.mean(-np.sum(truth * np.log(probabilities), axis=-1))
    dice = float(ClassMeanDiceLoss()(truth, probabilities))
    assert float(CrossEntropyDiceLoss()(truth, probabilities)) == pytest.approx(crossentropy + dice, rel=1e-4)
    assert float(make_loss("crossentropy")(truth, probabilities)) == pytest.approx(crossentropy, rel=1e-4)
    restored = keras.losses.deserialize(keras.losses.serialize(CrossEntropyDiceLoss(dice_weight=0.5)))
    assert restored.dice_weight == 0.5
    with pytest.raises(UserError, match="unknown loss 'l2'"):
        make_loss("l2")
