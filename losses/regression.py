"""Regression losses and penalties: smooth L1, sparsity (KL to a target
activation), weighted multi-task combination."""

import keras
from keras import ops

from losses._base import SuiteLoss


@keras.saving.register_keras_serializable(package="suite")
class SmoothL1Loss(SuiteLoss):
    """Smooth L1 (Girshick, "Fast R-CNN", 2015, Eq. 3, with threshold β):
    0.5 x²/β if |x| < β else |x| - 0.5 β, summed over the last axis
    (the box coordinates), x = y_pred - y_true."""

    _params = ("beta",)

    def __init__(self, beta=1.0, name="smooth_l1_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.beta = float(beta)

    def call(self, y_true, y_pred):
        y_true, y_pred = self._pair(y_true, y_pred)
        a = ops.abs(y_pred - y_true)
        return ops.sum(ops.where(a < self.beta, 0.5 * a * a / self.beta, a - 0.5 * self.beta), axis=-1)


def sparsity_penalty(activations, target=0.05, epsilon=1e-7):
    """Sparse autoencoder penalty (Ng, "Sparse autoencoder" notes, 2011):
    Σ_j KL(ρ || ρ̂_j) = Σ_j ρ log(ρ/ρ̂_j) + (1-ρ) log((1-ρ)/(1-ρ̂_j)),
    ρ̂_j = mean activation of unit j over the batch (activations in (0, 1))."""
    rho_hat = ops.clip(ops.mean(activations, axis=0), epsilon, 1.0 - epsilon)
    rho = target
    return ops.sum(rho * ops.log(rho / rho_hat) + (1.0 - rho) * ops.log((1.0 - rho) / (1.0 - rho_hat)))


@keras.saving.register_keras_serializable(package="suite")
class SparsityPenalty(SuiteLoss):
    """``sparsity_penalty`` as a Loss on (ignored y_true, activations)."""

    _params = ("target",)

    def __init__(self, target=0.05, name="sparsity_penalty", reduction="sum", **kwargs):
        super().__init__(name=name, reduction=reduction, **kwargs)
        self.target = float(target)

    def call(self, y_true, y_pred):
        return sparsity_penalty(y_pred, self.target)


@keras.saving.register_keras_serializable(package="suite")
class WeightedMultiTaskLoss(keras.losses.Loss):
    """Weighted sum of per-task losses, L = Σ_t w_t L_t(y_true[t], y_pred[t]).
    ``losses`` are Loss objects (serialized in the config); y_true and y_pred
    are lists in the same task order."""

    def __init__(self, losses, weights=None, name="weighted_multi_task_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.losses = [keras.losses.get(l) if isinstance(l, (str, dict)) else l for l in losses]
        self.weights = [1.0] * len(self.losses) if weights is None else [float(w) for w in weights]
        if len(self.weights) != len(self.losses):
            raise ValueError(f"WeightedMultiTaskLoss expects one weight per loss, got {len(self.weights)} weights "
                             f"for {len(self.losses)} losses")

    def __call__(self, y_true, y_pred, sample_weight=None):
        if not (isinstance(y_true, (list, tuple)) and isinstance(y_pred, (list, tuple))
                and len(y_true) == len(y_pred) == len(self.losses)):
            raise ValueError(f"WeightedMultiTaskLoss expects y_true and y_pred as lists of {len(self.losses)} "
                             f"tensors (one per task)")
        return sum(w * loss(t, p) for w, loss, t, p in zip(self.weights, self.losses, y_true, y_pred))

    def get_config(self):
        config = super().get_config()
        config.update(losses=[keras.losses.serialize(l) for l in self.losses], weights=list(self.weights))
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["losses"] = [keras.losses.deserialize(l) for l in config["losses"]]
        return cls(**config)
