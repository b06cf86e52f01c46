"""Overlap losses for segmentation: Dice and soft IoU (Jaccard)."""

import keras
from keras import ops

from losses._base import SuiteLoss


def _per_example_sums(y_true, y_pred):
    axes = tuple(range(1, len(y_pred.shape)))
    return (ops.sum(y_true * y_pred, axis=axes), ops.sum(y_true, axis=axes), ops.sum(y_pred, axis=axes))


@keras.saving.register_keras_serializable(package="suite")
class DiceLoss(SuiteLoss):
    """Soft Dice loss (Milletari et al., "V-Net", 2016, Eq. 1 with the
    plain-sum denominator): 1 - (2 Σ p g + s) / (Σ p + Σ g + s), per example
    over all non-batch axes; ``smooth`` s keeps empty masks finite."""

    _params = ("smooth",)

    def __init__(self, smooth=1.0, name="dice_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.smooth = float(smooth)

    def call(self, y_true, y_pred):
        y_true, y_pred = self._pair(y_true, y_pred)
        inter, t, p = _per_example_sums(y_true, y_pred)
        return 1.0 - (2.0 * inter + self.smooth) / (t + p + self.smooth)


@keras.saving.register_keras_serializable(package="suite")
class SoftIoULoss(SuiteLoss):
    """Soft IoU / Jaccard loss (Rahman & Wang 2016):
    1 - (Σ p g + s) / (Σ p + Σ g - Σ p g + s), per example."""

    _params = ("smooth",)

    def __init__(self, smooth=1.0, name="soft_iou_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.smooth = float(smooth)

    def call(self, y_true, y_pred):
        y_true, y_pred = self._pair(y_true, y_pred)
        inter, t, p = _per_example_sums(y_true, y_pred)
        return 1.0 - (inter + self.smooth) / (t + p - inter + self.smooth)
