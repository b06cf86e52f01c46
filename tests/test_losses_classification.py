"""Classification and overlap/regression losses against NumPy formulas."""

import keras
import numpy as np
import pytest
from layer_checks import assert_close, check_loss_gradient, check_loss_roundtrip, rand, rng, to_numpy

from losses import (
    BinaryFocalLoss,
    CategoricalFocalLoss,
    DiceLoss,
    LabelSmoothedCrossEntropy,
    MulticlassHinge,
    SmoothL1Loss,
    SoftIoULoss,
    SparsityPenalty,
    WeightedMultiTaskLoss,
    sparsity_penalty,
)

R = rng(81)
Y_BIN = (R.uniform(size=(4, 3)) > 0.5).astype(np.float32)
P_BIN = R.uniform(0.05, 0.95, size=(4, 3)).astype(np.float32)
Y_CAT = np.eye(4, dtype=np.float32)[R.integers(0, 4, size=5)]
LOGITS = R.normal(size=(5, 4)).astype(np.float32)
P_CAT = (np.exp(LOGITS) / np.exp(LOGITS).sum(-1, keepdims=True)).astype(np.float32)
MASK = (R.uniform(size=(3, 4, 4, 1)) > 0.5).astype(np.float32)
P_MASK = R.uniform(0.05, 0.95, size=(3, 4, 4, 1)).astype(np.float32)
BOX_T, BOX_P = rand(4, 4, seed=82, low=-2, high=2), rand(4, 4, seed=83, low=-2, high=2)


def focal_bin_ref(y, p, alpha=0.25, gamma=2.0):
    pt = np.where(y == 1, p, 1 - p)
    at = np.where(y == 1, alpha, 1 - alpha)
    return (-at * (1 - pt) ** gamma * np.log(pt)).mean(-1).mean()


def focal_cat_ref(y, p, alpha=0.25, gamma=2.0):
    return (-(alpha * y * (1 - p) ** gamma * np.log(p)).sum(-1)).mean()


def hinge_ref(y, s, margin=1.0):
    out = []
    for yi, si in zip(y, s):
        t = int(np.argmax(yi))
        out.append(max(0.0, margin + max(si[j] for j in range(len(si)) if j != t) - si[t]))
    return np.mean(out)


def smoothed_ce_ref(y, p, eps, distribution):
    k = y.shape[-1]
    q = (1 - eps) * y + (eps / k if distribution == "uniform" else eps / (k - 1) * (1 - y))
    return (-(q * np.log(p)).sum(-1)).mean()


def dice_ref(y, p, s=1.0):
    y, p = y.reshape(len(y), -1), p.reshape(len(p), -1)
    return (1 - (2 * (y * p).sum(1) + s) / (y.sum(1) + p.sum(1) + s)).mean()


def iou_ref(y, p, s=1.0):
    y, p = y.reshape(len(y), -1), p.reshape(len(p), -1)
    i = (y * p).sum(1)
    return (1 - (i + s) / (y.sum(1) + p.sum(1) - i + s)).mean()


def smooth_l1_ref(t, p, beta=1.0):
    a = np.abs(p - t)
    return np.where(a < beta, 0.5 * a ** 2 / beta, a - 0.5 * beta).sum(-1).mean()


CASES = {
    "binary_focal": (BinaryFocalLoss(alpha=0.3, gamma=2.0), Y_BIN, P_BIN, lambda y, p: focal_bin_ref(y, p, 0.3)),
    "binary_focal_logits": (BinaryFocalLoss(from_logits=True), Y_BIN, np.log(P_BIN / (1 - P_BIN)),
                            lambda y, p: focal_bin_ref(y, P_BIN.astype(np.float64))),
    "categorical_focal": (CategoricalFocalLoss(alpha=0.5, gamma=1.5), Y_CAT, P_CAT,
                          lambda y, p: focal_cat_ref(y, p, 0.5, 1.5)),
    "categorical_focal_logits": (CategoricalFocalLoss(from_logits=True), Y_CAT, LOGITS,
                                 lambda y, p: focal_cat_ref(y, P_CAT.astype(np.float64))),
    "multiclass_hinge": (MulticlassHinge(margin=0.5), Y_CAT, LOGITS, lambda y, s: hinge_ref(y, s, 0.5)),
    "label_smoothing_others": (LabelSmoothedCrossEntropy(0.2, "others", from_logits=True), Y_CAT, LOGITS,
                               lambda y, p: smoothed_ce_ref(y, P_CAT.astype(np.float64), 0.2, "others")),
    "label_smoothing_uniform": (LabelSmoothedCrossEntropy(0.2, "uniform"), Y_CAT, P_CAT,
                                lambda y, p: smoothed_ce_ref(y, p, 0.2, "uniform")),
    "dice": (DiceLoss(), MASK, P_MASK, dice_ref),
    "soft_iou": (SoftIoULoss(smooth=0.5), MASK, P_MASK, lambda y, p: iou_ref(y, p, 0.5)),
    "smooth_l1": (SmoothL1Loss(beta=0.7), BOX_T, BOX_P, lambda t, p: smooth_l1_ref(t, p, 0.7)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_loss_forward(name):
    loss, y, p, ref = CASES[name]
    assert_close(to_numpy(loss(y, p)), ref(y.astype(np.float64), p.astype(np.float64)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(CASES))
def test_loss_gradient_float64(name):
    loss, y, p, _ = CASES[name]
    y64 = y.astype(np.float64)
    loss64 = type(loss).from_config({**loss.get_config(), "dtype": "float64"})
    check_loss_gradient(lambda v: loss64(y64, v), [p.astype(np.float64)])


@pytest.mark.parametrize("name", list(CASES))
def test_loss_roundtrip(name, tmp_path):
    loss, y, p, _ = CASES[name]
    check_loss_roundtrip(loss, y, p, tmp_path)


@pytest.mark.parametrize("name", list(CASES))
def test_loss_shape_error(name):
    loss, y, p, _ = CASES[name]
    with pytest.raises(ValueError, match=f"{type(loss).__name__} expects y_true and y_pred of the same shape"):
        loss(y[..., :-1], p)


def test_label_smoothing_uniform_equals_keras_and_others_differs():
    ours = LabelSmoothedCrossEntropy(0.2, "uniform", from_logits=True)(Y_CAT, LOGITS)
    keras_ = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.2)(Y_CAT, LOGITS)
    assert_close(to_numpy(ours), to_numpy(keras_), atol=1e-6)
    seed_def = LabelSmoothedCrossEntropy(0.2, "others", from_logits=True)(Y_CAT, LOGITS)
    assert abs(float(seed_def) - float(keras_)) > 1e-3


def test_multiclass_hinge_vs_keras_categorical_hinge():
    # Keras takes max((1 - y) * s), which lets the zeroed true class win when every
    # other score is negative; with positive scores the two definitions agree.
    positive = LOGITS + 10.0
    assert_close(to_numpy(MulticlassHinge()(Y_CAT, positive)),
                 to_numpy(keras.losses.CategoricalHinge()(Y_CAT, positive)), atol=1e-5)


def test_smooth_l1_equals_huber_at_beta_1():
    # Huber(δ=1) averages over the last axis, smooth L1 sums it.
    assert_close(to_numpy(SmoothL1Loss()(BOX_T, BOX_P)), 4 * to_numpy(keras.losses.Huber(1.0)(BOX_T, BOX_P)),
                 atol=1e-5)


def test_sparsity_penalty_kl():
    act = rand(6, 5, seed=84, low=0.02, high=0.9)
    rho, rho_hat = 0.1, act.astype(np.float64).mean(0)
    expected = (rho * np.log(rho / rho_hat) + (1 - rho) * np.log((1 - rho) / (1 - rho_hat))).sum()
    assert_close(to_numpy(sparsity_penalty(act, 0.1)), expected, atol=1e-5)
    assert_close(to_numpy(SparsityPenalty(0.1)(act, act)), expected, atol=1e-5)
    check_loss_gradient(lambda a: sparsity_penalty(a, 0.1), [act.astype(np.float64)])
    assert SparsityPenalty.from_config(SparsityPenalty(0.1).get_config()).target == 0.1


def test_weighted_multi_task_loss(tmp_path):
    loss = WeightedMultiTaskLoss([DiceLoss(), SmoothL1Loss()], weights=[0.3, 2.0])
    expected = 0.3 * dice_ref(MASK, P_MASK) + 2.0 * smooth_l1_ref(BOX_T, BOX_P)
    assert_close(to_numpy(loss([MASK, BOX_T], [P_MASK, BOX_P])), expected, atol=1e-5)
    revived = keras.losses.deserialize(keras.losses.serialize(loss))
    assert revived.weights == [0.3, 2.0] and isinstance(revived.losses[1], SmoothL1Loss)
    assert_close(to_numpy(revived([MASK, BOX_T], [P_MASK, BOX_P])), expected, atol=1e-5)
    with pytest.raises(ValueError, match="WeightedMultiTaskLoss expects one weight per loss"):
        WeightedMultiTaskLoss([DiceLoss()], weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="WeightedMultiTaskLoss expects y_true and y_pred as lists of 2"):
        loss(MASK, P_MASK)
