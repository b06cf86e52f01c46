"""Detection losses built on the suite's focal and smooth-L1 losses (losses/).

Targets are packed into one tensor per output so plain `compile(loss=...)` works:
  anchors  (B, A, 5)  encoded box deltas + label (class >= 0, -1 background, -2 ignore)
  RoI box  (B, R, 5)  encoded deltas + 1 for a positive RoI
  RoI mask (B, R, M, M, C)  1/0 in the RoI's class channel, -1 (ignored) elsewhere
"""

import keras
from keras import ops

from losses import BinaryFocalLoss, SmoothL1Loss


def _per_example(value, count):
    """Sum over everything but the batch, divided by max(1, count) of the example."""
    return ops.sum(ops.reshape(value, (ops.shape(value)[0], -1)), axis=1) / ops.maximum(count, 1.0)


@keras.saving.register_keras_serializable(package="detect")
class AnchorLoss(keras.losses.Loss):
    """RetinaNet's loss (Lin et al. 2017): sigmoid focal loss summed over classes and
    non-ignored anchors, plus smooth L1 on the positive anchors' box deltas, both
    divided by the number of positive anchors. One class = an RPN's objectness."""

    def __init__(self, num_classes, alpha=0.25, gamma=2.0, box_weight=1.0, name="anchor_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes, self.alpha, self.gamma, self.box_weight = int(num_classes), alpha, gamma, box_weight
        self.focal = BinaryFocalLoss(alpha=alpha, gamma=gamma, from_logits=True, reduction=None)
        self.smooth_l1 = SmoothL1Loss(beta=1.0, reduction=None)

    def call(self, y_true, y_pred):
        labels = y_true[..., 4]
        positive = ops.cast(labels >= 0, y_pred.dtype)
        counted = ops.cast(labels >= -1, y_pred.dtype)  # IGNORE anchors add nothing
        one_hot = ops.one_hot(ops.cast(ops.maximum(labels, 0), "int32"), self.num_classes) * positive[..., None]
        # BinaryFocalLoss averages over the classes; RetinaNet sums them.
        focal = self.focal(one_hot, y_pred[..., 4:]) * self.num_classes * counted
        box = self.smooth_l1(y_true[..., :4], y_pred[..., :4]) * positive
        num_positive = ops.sum(positive, axis=1)
        return _per_example(focal, num_positive) + self.box_weight * _per_example(box, num_positive)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "alpha": self.alpha, "gamma": self.gamma,
                "box_weight": self.box_weight}


@keras.saving.register_keras_serializable(package="detect")
class PositiveBoxLoss(keras.losses.Loss):
    """Smooth L1 on the box deltas of positive RoIs, per positive RoI."""

    def __init__(self, name="roi_box_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.smooth_l1 = SmoothL1Loss(beta=1.0, reduction=None)

    def call(self, y_true, y_pred):
        positive = y_true[..., 4]
        box = self.smooth_l1(y_true[..., :4], y_pred) * positive
        return _per_example(box, ops.sum(positive, axis=1))


@keras.saving.register_keras_serializable(package="detect")
class MaskLoss(keras.losses.Loss):
    """Mask R-CNN's mask loss (He et al. 2017): per-pixel sigmoid cross-entropy of the
    mask in the RoI's ground-truth class channel only, averaged over those pixels."""

    def call(self, y_true, y_pred):
        counted = ops.cast(y_true >= 0, y_pred.dtype)
        target = ops.maximum(y_true, 0.0)
        # Numerically stable sigmoid cross-entropy from logits.
        bce = ops.maximum(y_pred, 0.0) - y_pred * target + ops.log1p(ops.exp(-ops.abs(y_pred)))
        return _per_example(bce * counted, ops.sum(ops.reshape(counted, (ops.shape(counted)[0], -1)), axis=1))
