"""Classification losses: focal (binary, categorical), multiclass hinge,
label-smoothed cross-entropy."""

import keras
from keras import ops

from losses._base import SuiteLoss

_EPS = 1e-7


@keras.saving.register_keras_serializable(package="suite")
class BinaryFocalLoss(SuiteLoss):
    """Focal loss (Lin et al., "Focal Loss for Dense Object Detection", 2017,
    Eq. 5): FL(p_t) = -α_t (1 - p_t)^γ log p_t, p_t = p if y = 1 else 1 - p,
    α_t = α if y = 1 else 1 - α. Mean over the last axis."""

    _params = ("alpha", "gamma", "from_logits")

    def __init__(self, alpha=0.25, gamma=2.0, from_logits=False, name="binary_focal_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.alpha, self.gamma, self.from_logits = float(alpha), float(gamma), bool(from_logits)

    def call(self, y_true, y_pred):
        y_true, y_pred = self._pair(y_true, y_pred)
        p = ops.sigmoid(y_pred) if self.from_logits else ops.clip(y_pred, _EPS, 1.0 - _EPS)
        p_t = y_true * p + (1.0 - y_true) * (1.0 - p)
        alpha_t = y_true * self.alpha + (1.0 - y_true) * (1.0 - self.alpha)
        return ops.mean(-alpha_t * ops.power(1.0 - p_t, self.gamma) * ops.log(p_t), axis=-1)


@keras.saving.register_keras_serializable(package="suite")
class CategoricalFocalLoss(SuiteLoss):
    """Multi-class focal loss (Lin et al. 2017): -Σ_c α y_c (1 - p_c)^γ log p_c
    over one-hot (or soft) targets, p = softmax(logits) or given probabilities."""

    _params = ("alpha", "gamma", "from_logits")

    def __init__(self, alpha=0.25, gamma=2.0, from_logits=False, name="categorical_focal_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.alpha, self.gamma, self.from_logits = float(alpha), float(gamma), bool(from_logits)

    def call(self, y_true, y_pred):
        y_true, y_pred = self._pair(y_true, y_pred)
        p = ops.softmax(y_pred, axis=-1) if self.from_logits else ops.clip(y_pred, _EPS, 1.0 - _EPS)
        return -ops.sum(self.alpha * y_true * ops.power(1.0 - p, self.gamma) * ops.log(p), axis=-1)


@keras.saving.register_keras_serializable(package="suite")
class MulticlassHinge(SuiteLoss):
    """Multiclass hinge of Crammer & Singer (2001):
    max(0, margin + max_{j≠y} s_j - s_y) for one-hot y and scores s.
    Keras' CategoricalHinge uses max_j (1 - y_j) s_j, in which the zeroed
    true class can win; the two agree only when the other scores are positive."""

    _params = ("margin",)

    def __init__(self, margin=1.0, name="multiclass_hinge", **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin = float(margin)

    def call(self, y_true, y_pred):
        y_true, y_pred = self._pair(y_true, y_pred)
        correct = ops.sum(y_true * y_pred, axis=-1)
        # Push the true class far down so it never wins the max over j != y.
        others = ops.max(y_pred - y_true * 1e9, axis=-1)
        return ops.relu(self.margin + others - correct)


@keras.saving.register_keras_serializable(package="suite")
class LabelSmoothedCrossEntropy(SuiteLoss):
    """Cross-entropy against smoothed targets (Szegedy et al., "Rethinking
    the Inception Architecture", 2016, Sec. 7).

    ``distribution="uniform"`` is the paper's q' = (1-ε) q + ε/K (also what
    ``keras.losses.CategoricalCrossentropy(label_smoothing=ε)`` computes).
    ``distribution="others"`` is the seed's definition: the true class keeps
    exactly 1-ε and ε is spread over the K-1 *other* classes,
    q' = (1-ε) q + ε/(K-1) (1-q) -- Keras has no option for it.
    """

    _params = ("smoothing", "distribution", "from_logits")

    def __init__(self, smoothing=0.1, distribution="others", from_logits=False,
                 name="label_smoothed_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        if distribution not in ("uniform", "others"):
            raise ValueError(f"LabelSmoothedCrossEntropy expects distribution 'uniform' or 'others', "
                             f"got {distribution!r}")
        self.smoothing, self.distribution, self.from_logits = float(smoothing), distribution, bool(from_logits)

    def call(self, y_true, y_pred):
        y_true, y_pred = self._pair(y_true, y_pred)
        k = y_pred.shape[-1]
        eps = self.smoothing
        if self.distribution == "uniform":
            target = (1.0 - eps) * y_true + eps / k
        else:
            target = (1.0 - eps) * y_true + eps / (k - 1) * (1.0 - y_true)
        if self.from_logits:
            log_p = ops.log_softmax(y_pred, axis=-1)
        else:
            p = y_pred / ops.sum(y_pred, axis=-1, keepdims=True)
            log_p = ops.log(ops.clip(p, _EPS, 1.0))
        return -ops.sum(target * log_p, axis=-1)
