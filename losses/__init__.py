"""Shared losses of the suite; every public class and function is re-exported here."""

from losses.classification import BinaryFocalLoss, CategoricalFocalLoss, LabelSmoothedCrossEntropy, MulticlassHinge
from losses.generative import (
                               CycleConsistencyLoss,
                               KLStandardNormal,
                               critic_loss_wasserstein,
                               cycle_consistency_loss,
                               discriminator_loss_least_squares,
                               discriminator_loss_minimax,
                               feature_matching_loss,
                               gaussian_reconstruction_log_likelihood,
                               generator_loss_least_squares,
                               generator_loss_minimax,
                               generator_loss_non_saturating,
                               generator_loss_wasserstein,
                               gradient_penalty,
                               kl_standard_normal,
                               kl_standard_normal_sampled,
                               negative_elbo,
)
from losses.regression import SmoothL1Loss, SparsityPenalty, WeightedMultiTaskLoss, sparsity_penalty
from losses.segmentation import DiceLoss, SoftIoULoss
from losses.style import (
                               ContentLoss,
                               StyleLoss,
                               TotalVariationLoss,
                               content_loss,
                               gram_matrix,
                               style_loss,
                               total_variation_loss,
)

__all__ = [
    "BinaryFocalLoss", "CategoricalFocalLoss", "MulticlassHinge", "LabelSmoothedCrossEntropy",
    "DiceLoss", "SoftIoULoss", "SmoothL1Loss", "SparsityPenalty", "sparsity_penalty", "WeightedMultiTaskLoss",
    "kl_standard_normal", "kl_standard_normal_sampled", "gaussian_reconstruction_log_likelihood", "negative_elbo",
    "KLStandardNormal", "discriminator_loss_minimax", "generator_loss_minimax", "generator_loss_non_saturating",
    "discriminator_loss_least_squares", "generator_loss_least_squares", "critic_loss_wasserstein",
    "generator_loss_wasserstein", "gradient_penalty", "feature_matching_loss", "cycle_consistency_loss",
    "CycleConsistencyLoss", "gram_matrix", "content_loss", "style_loss", "total_variation_loss", "ContentLoss",
    "StyleLoss", "TotalVariationLoss",
]
