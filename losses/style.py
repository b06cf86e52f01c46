"""Neural style losses (Gatys et al. 2016) and total variation."""

import keras
from keras import ops

from losses._base import check_same_shape


def _check_nhwc(name, x):
    if len(x.shape) != 4:
        raise ValueError(f"{name} expects a 4-D input (batch, height, width, channels), got shape {tuple(x.shape)}")


def gram_matrix(features):
    """G = F^T F / (H W) for NHWC features (Gatys et al. 2016, Eq. 3, normalized)."""
    _check_nhwc("gram_matrix", features)
    g = ops.einsum("bhwi,bhwj->bij", features, features)
    return g / ops.cast(ops.shape(features)[1] * ops.shape(features)[2], g.dtype)


def content_loss(content_features, generated_features):
    """½ Σ (F - P)² (Gatys et al. 2016, Eq. 1), per example."""
    check_same_shape("content_loss", content_features, generated_features)
    axes = tuple(range(1, len(generated_features.shape)))
    return 0.5 * ops.sum(ops.square(generated_features - content_features), axis=axes)


def style_loss(style_features, generated_features):
    """Σ (G - A)² / (4 C²) on H·W-normalized Gram matrices (Gatys et al.
    2016, Eq. 4, whose 1/(4 N² M²) becomes 1/(4 N²) after the 1/M in G)."""
    check_same_shape("style_loss", style_features, generated_features)
    _check_nhwc("style_loss", generated_features)
    c = generated_features.shape[-1]
    diff = gram_matrix(generated_features) - gram_matrix(style_features)
    return ops.sum(ops.square(diff), axis=(1, 2)) / (4.0 * c * c)


def total_variation_loss(images, power=1.0):
    """Anisotropic total variation (Rudin et al. 1992; used as a smoothness
    prior by Mahendran & Vedaldi 2015): Σ |x_{i+1,j} - x_ij|^β + |x_{i,j+1} - x_ij|^β
    per example (β = ``power``, 1 gives tf.image.total_variation)."""
    _check_nhwc("total_variation_loss", images)
    dy = images[:, 1:, :, :] - images[:, :-1, :, :]
    dx = images[:, :, 1:, :] - images[:, :, :-1, :]
    f = (lambda d: ops.abs(d)) if power == 1.0 else (lambda d: ops.power(ops.abs(d), power))
    return ops.sum(f(dy), axis=(1, 2, 3)) + ops.sum(f(dx), axis=(1, 2, 3))


@keras.saving.register_keras_serializable(package="suite")
class StyleLoss(keras.losses.Loss):
    """``style_loss`` as a Loss (y_true = style features, y_pred = generated)."""

    def __init__(self, name="style_loss", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        return style_loss(ops.cast(y_true, y_pred.dtype), y_pred)


@keras.saving.register_keras_serializable(package="suite")
class ContentLoss(keras.losses.Loss):
    """``content_loss`` as a Loss (y_true = content features, y_pred = generated)."""

    def __init__(self, name="content_loss", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        return content_loss(ops.cast(y_true, y_pred.dtype), y_pred)


@keras.saving.register_keras_serializable(package="suite")
class TotalVariationLoss(keras.losses.Loss):
    """``total_variation_loss`` of y_pred as a Loss (y_true ignored)."""

    def __init__(self, power=1.0, name="total_variation_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.power = float(power)

    def call(self, y_true, y_pred):
        return total_variation_loss(y_pred, self.power)

    def get_config(self):
        config = super().get_config()
        config.update(power=self.power)
        return config
