"""Losses of the segmentation app, on one-hot targets and per-pixel probabilities (N, S, S, K)."""

import keras
from keras import ops

from core.errors import UserError
from losses import DiceLoss
from losses._base import SuiteLoss

LOSSES = ("crossentropy", "dice", "both")


@keras.saving.register_keras_serializable(package="segment")
class ClassMeanDiceLoss(SuiteLoss):
    """Multi-class soft Dice: 1 - mean over classes c of the Dice coefficient of
    class c's probability map against its mask, over all pixels of the batch
    (Milletari et al. 2016; Sudre et al. 2017 without class weights).

    Each class counts the same, however few pixels it has: a Dice over all
    classes pooled would be dominated by the background. The per-class Dice is
    `losses.DiceLoss` with the class axis moved in front as its "example" axis."""

    _params = ("smooth",)

    def __init__(self, smooth=1.0, name="class_mean_dice_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.smooth = float(smooth)
        self._dice = DiceLoss(smooth=smooth)

    def call(self, y_true, y_pred):
        y_true, y_pred = self._pair(y_true, y_pred)
        per_class = (0, *range(1, len(y_pred.shape) - 1))   # (N, S, S, K) -> (K, N, S, S)
        order = (len(y_pred.shape) - 1, *per_class)
        dice_losses = self._dice.call(ops.transpose(y_true, order), ops.transpose(y_pred, order))  # (K,)
        return ops.mean(dice_losses) * ops.ones_like(y_pred[:, 0, 0, 0])  # the same value for every example


@keras.saving.register_keras_serializable(package="segment")
class CrossEntropyDiceLoss(SuiteLoss):
    """Pixel-wise categorical cross-entropy plus `dice_weight` times the class-mean Dice loss."""

    _params = ("dice_weight",)

    def __init__(self, dice_weight=1.0, name="crossentropy_dice_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.dice_weight = float(dice_weight)
        self._dice = ClassMeanDiceLoss()

    def call(self, y_true, y_pred):
        y_true, y_pred = self._pair(y_true, y_pred)
        crossentropy = ops.mean(keras.losses.categorical_crossentropy(y_true, y_pred), axis=(1, 2))
        return crossentropy + self.dice_weight * self._dice.call(y_true, y_pred)


def make_loss(name):
    """The loss named on the command line: crossentropy, dice or both (their sum)."""
    table = {"crossentropy": lambda: keras.losses.CategoricalCrossentropy(name="crossentropy"),
             "dice": ClassMeanDiceLoss, "both": CrossEntropyDiceLoss}
    if name not in table:
        raise UserError(f"unknown loss '{name}'; choose one of: {', '.join(table)}")
    return table[name]()
