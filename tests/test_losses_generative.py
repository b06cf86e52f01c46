"""VAE ELBO pieces, GAN losses, cycle consistency, style and TV losses."""

import numpy as np
import pytest
import tensorflow as tf
from layer_checks import assert_close, check_loss_gradient, check_loss_roundtrip, rand, to_numpy

from losses import (
    ContentLoss,
    CycleConsistencyLoss,
    KLStandardNormal,
    StyleLoss,
    TotalVariationLoss,
    content_loss,
    critic_loss_wasserstein,
    cycle_consistency_loss,
    discriminator_loss_least_squares,
    discriminator_loss_minimax,
    feature_matching_loss,
    generator_loss_least_squares,
    generator_loss_minimax,
    generator_loss_non_saturating,
    generator_loss_wasserstein,
    gradient_penalty,
    kl_standard_normal,
    kl_standard_normal_sampled,
    negative_elbo,
    style_loss,
    total_variation_loss,
)

MU, LV = rand(3, 4, seed=91).astype(np.float64), rand(3, 4, seed=92).astype(np.float64)
REAL, FAKE = (
    rand(5, 1, seed=93, low=-2, high=2).astype(np.float64),
    rand(5, 1, seed=94, low=-2, high=2).astype(np.float64),
)
F1, F2 = rand(2, 3, 4, 3, seed=95).astype(np.float64), rand(2, 3, 4, 3, seed=96).astype(np.float64)
sig = lambda l: 1 / (1 + np.exp(-l))


def kl_ref(m, lv):
    # KL(N(m, s²) || N(0, 1)) = log(1/s) + (s² + m²)/2 - 1/2, per dimension.
    s2 = np.exp(lv)
    return (-0.5 * lv + 0.5 * (s2 + m**2) - 0.5).sum(-1)


def gram_ref(f):
    f = f.reshape(f.shape[0], -1, f.shape[-1])
    return np.einsum("bki,bkj->bij", f, f) / f.shape[1]


FUNCTIONS = {
    "kl_analytic": (lambda m, lv: kl_standard_normal(m, lv), [MU, LV], kl_ref),
    "d_minimax": (
        discriminator_loss_minimax,
        [REAL, FAKE],
        lambda r, f: -(np.log(sig(r)).mean() + np.log(1 - sig(f)).mean()),
    ),
    "g_minimax": (generator_loss_minimax, [FAKE], lambda f: np.log(1 - sig(f)).mean()),
    "g_non_saturating": (generator_loss_non_saturating, [FAKE], lambda f: -np.log(sig(f)).mean()),
    "d_least_squares": (
        discriminator_loss_least_squares,
        [REAL, FAKE],
        lambda r, f: 0.5 * ((r - 1) ** 2).mean() + 0.5 * (f**2).mean(),
    ),
    "g_least_squares": (generator_loss_least_squares, [FAKE], lambda f: 0.5 * ((f - 1) ** 2).mean()),
    "critic_wasserstein": (critic_loss_wasserstein, [REAL, FAKE], lambda r, f: f.mean() - r.mean()),
    "g_wasserstein": (generator_loss_wasserstein, [FAKE], lambda f: -f.mean()),
    "feature_matching": (
        feature_matching_loss,
        [F1.reshape(2, -1), F2.reshape(2, -1)],
        lambda a, b: ((a.mean(0) - b.mean(0)) ** 2).sum(),
    ),
    "cycle": (lambda a, b: cycle_consistency_loss(a, b, 5.0), [F1, F2], lambda a, b: 5.0 * np.abs(b - a).mean()),
    "content": (content_loss, [F1, F2], lambda a, b: 0.5 * ((b - a) ** 2).sum((1, 2, 3))),
    "style": (style_loss, [F1, F2], lambda a, b: ((gram_ref(b) - gram_ref(a)) ** 2).sum((1, 2)) / (4 * 9)),
    "total_variation": (
        total_variation_loss,
        [F1],
        lambda x: np.abs(np.diff(x, axis=1)).sum((1, 2, 3)) + np.abs(np.diff(x, axis=2)).sum((1, 2, 3)),
    ),
    "negative_elbo": (
        lambda x, xm, m, lv: negative_elbo(x, xm, m, lv),
        [F1.reshape(2, -1), F2.reshape(2, -1), MU[:2], LV[:2]],
        lambda x, xm, m, lv: (0.5 * (np.log(2 * np.pi) + (x - xm) ** 2)).sum(-1) + kl_ref(m, lv),
    ),
}


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_function_forward(name):
    fn, args, ref = FUNCTIONS[name]
    assert_close(to_numpy(fn(*[a.astype(np.float32) for a in args])), ref(*args), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_function_gradient_float64(name):
    fn, args, _ = FUNCTIONS[name]
    check_loss_gradient(lambda *a: fn(*a), args)


def test_tv_matches_tf_image_total_variation():
    assert_close(to_numpy(total_variation_loss(F1)), tf.image.total_variation(tf.constant(F1)).numpy(), atol=1e-8)


def test_kl_sampled_with_tfp_approaches_analytic():
    mu, lv = MU.astype(np.float32), LV.astype(np.float32)
    sampled = to_numpy(kl_standard_normal_sampled(mu, lv, num_samples=20000, seed=1))
    assert_close(sampled, kl_ref(MU, LV), atol=0.05, rtol=0.05)
    # Reparameterized samples: the estimator is differentiable in μ and log σ².
    m = tf.Variable(mu)
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(kl_standard_normal_sampled(m, lv, num_samples=20000, seed=2))
    assert_close(tape.gradient(value, m).numpy(), MU, atol=0.05)  # dKL/dμ = μ


def test_gradient_penalty():
    # Linear critic f(x) = x·w has ∇f = w everywhere: penalty = (||w|| - 1)².
    w = np.array([[0.5], [2.0], [-1.0]], np.float64)
    critic = lambda x: tf.matmul(x, w)
    real, fake = rand(4, 3, seed=97).astype(np.float64), rand(4, 3, seed=98).astype(np.float64)
    assert_close(gradient_penalty(critic, real, fake, seed=3).numpy(), (np.linalg.norm(w) - 1) ** 2, atol=1e-9)
    # Quadratic critic f(x) = ½||x||²: ∇f(x̂) = x̂, checked at a fixed ε.
    eps = rand(4, 1, seed=99, low=0, high=1).astype(np.float64)
    x_hat = eps * real + (1 - eps) * fake
    expected = ((np.linalg.norm(x_hat, axis=1) - 1) ** 2).mean()
    got = gradient_penalty(lambda x: 0.5 * tf.reduce_sum(x * x, axis=1), real, fake, epsilon=eps).numpy()
    assert_close(got, expected, atol=1e-9)


LOSS_OBJECTS = {
    "kl": (KLStandardNormal(), np.zeros((3, 8), np.float32), np.concatenate([MU, LV], -1).astype(np.float32)),
    "cycle": (CycleConsistencyLoss(4.0), F1.astype(np.float32), F2.astype(np.float32)),
    "content": (ContentLoss(), F1.astype(np.float32), F2.astype(np.float32)),
    "style": (StyleLoss(), F1.astype(np.float32), F2.astype(np.float32)),
    "tv": (TotalVariationLoss(), F1.astype(np.float32), F2.astype(np.float32)),
}


@pytest.mark.parametrize("name", list(LOSS_OBJECTS))
def test_loss_object_roundtrip(name, tmp_path):
    loss, y, p = LOSS_OBJECTS[name]
    check_loss_roundtrip(loss, y, p, tmp_path)


def test_shape_errors():
    with pytest.raises(ValueError, match="kl_standard_normal expects y_true and y_pred of the same shape"):
        kl_standard_normal(MU, LV[:, :2])
    with pytest.raises(ValueError, match=r"KLStandardNormal expects y_pred of shape \(batch, 2\*latent\)"):
        KLStandardNormal()(np.zeros((3, 3)), np.ones((3, 3), np.float32))
    with pytest.raises(ValueError, match=r"style_loss expects a 4-D input \(batch, height, width, channels\)"):
        style_loss(F1.reshape(2, -1), F2.reshape(2, -1))
    with pytest.raises(ValueError, match="cycle_consistency_loss expects y_true and y_pred of the same shape"):
        cycle_consistency_loss(F1, F2[:, :2])
    with pytest.raises(ValueError, match=r"total_variation_loss expects a 4-D input"):
        total_variation_loss(F1[0])
