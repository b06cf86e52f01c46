"""The generative app, the rest of the lecture notes: an overcomplete autoencoder copies noise unless a sparsity
penalty or denoising stops it; an unrolled GAN (gradient through the unrolled discriminator) covers the modes
a plain GAN drops; pix2pix (U-Net + conditional PatchGAN) learns edges -> item and exports with parity.

Real data (scikit-learn's digits, Fashion-MNIST), real TensorFlow, tiny budgets, fixed seeds."""

import numpy as np
import pytest
import tensorflow as tf

from core.errors import UserError

EPS32 = float(np.finfo(np.float32).eps)


# --- overcomplete autoencoders --------------------------------------------------------------------------------

def test_overcomplete_autoencoder_copies_noise_unless_sparse_or_denoising():
    from apps.generative import overcomplete

    x, x_test, noise = overcomplete.digits_and_noise(seed=0)
    figures = {v: overcomplete.measure(v, x, x_test, noise, steps=600, seed=0)[0]
               for v in ("plain", "sparse_l1", "denoising")}
    plain = figures["plain"]
    # Unconstrained, 256 ReLU codes for 64 pixels: (close to) the identity. It reconstructs the noise images
    # almost perfectly too (measured FVU 0.004; 1 = no better than the mean image), with dense codes (about
    # half the ReLUs on, as at a random initialization; measured 0.56-0.58 near zero over three seeds).
    assert plain["fvu_digits"] < 0.01 and plain["fvu_noise"] < 0.03
    assert plain["near_zero_codes"] < 0.7
    for variant in ("sparse_l1", "denoising"):
        f = figures[variant]
        assert f["fvu_digits"] < 0.3, variant  # still reconstructs digits (measured 0.10 and 0.16) ...
        assert f["fvu_noise"] > 0.35, variant  # ... but no longer copies noise (measured 0.52-0.56) ...
        assert f["fvu_noise"] > 2.5 * f["fvu_digits"], variant  # ... it has learned what digits look like
        assert f["near_zero_codes"] > plain["near_zero_codes"] + 0.15, variant  # measured 0.94 / 0.83 vs 0.57
        assert f["hoyer"] > plain["hoyer"] + 0.15, variant  # scale-free sparsity: 0.79 / 0.64 vs 0.41


# --- unrolled GAN ---------------------------------------------------------------------------------------------

def _ring_batch(net, n=64, seed=1):
    import keras

    from apps.generative import unrolled

    images = tf.constant(unrolled.ring_samples(n, seed=seed), keras.config.floatx())
    latent = tf.constant(np.random.default_rng(seed + 1).standard_normal((n, net.latent_dim)).astype(np.float32))
    return images, latent


def _generator_gradient(net, loss_fn, images, latent):
    with tf.GradientTape() as tape:
        loss = loss_fn(images, None, latent)
    return [g.numpy() for g in tape.gradient(loss, net.generator.trainable_variables)]


def test_unrolled_gan_with_zero_steps_has_the_plain_gan_generator_gradient():
    import losses
    from apps.generative import unrolled
    from apps.generative.gan import GAN

    net = unrolled.build(0, seed=0)
    plain = GAN(net.generator, net.discriminator)  # the reference: the app's plain GAN on the same networks
    images, latent = _ring_batch(net)
    ours = _generator_gradient(net, net.generator_loss, images, latent)
    reference = _generator_gradient(net, plain.generator_loss, images, latent)
    # The same operations in the same order (the weights come in as tensors instead of variables): at most a
    # few roundings of the largest gradient entry apart.
    for a, b in zip(ours, reference):
        np.testing.assert_allclose(a, b, rtol=0, atol=16 * EPS32 * np.abs(b).max())
    assert max(np.abs(b).max() for b in reference) > 1e-4  # a real gradient, not zeros

    # One unrolled step is one gradient-descent step of the discriminator loss, computed here by hand.
    net = unrolled.build(1, unroll_learning_rate=0.1, seed=0)
    fake = net.generator(latent)
    d_vars = net.discriminator.trainable_variables
    with tf.GradientTape() as tape:
        d_loss = losses.discriminator_loss_minimax(net.discriminator(images)[0], net.discriminator(fake)[0])
    by_hand = [v.numpy() - 0.1 * g.numpy() for v, g in zip(d_vars, tape.gradient(d_loss, d_vars))]
    for a, b in zip(net.unrolled_weights(images, fake), by_hand):
        np.testing.assert_allclose(a.numpy(), b, rtol=0, atol=16 * EPS32 * max(1.0, np.abs(b).max()))


def test_the_generator_gradient_goes_through_the_unrolled_discriminator():
    """Float64 finite differences of f(θ_G, θ_D^K(θ_G)) along a random direction match the unrolled model's
    gradient; the stop-gradient surrogate's gradient is a different vector."""
    import keras

    from apps.generative import unrolled

    policy, floatx = keras.config.dtype_policy(), keras.config.floatx()
    keras.config.set_floatx("float64")  # inputs
    keras.config.set_dtype_policy("float64")  # layers (the global policy is fixed once a layer exists)
    try:
        gradients, slopes = {}, {}
        for second_order in (True, False):
            net = unrolled.build(3, hidden=(16, 16), latent_dim=4, second_order=second_order, seed=0)
            images, latent = _ring_batch(net)
            weights = net.generator.trainable_variables
            gradients[second_order] = np.concatenate([g.ravel() for g in
                                                      _generator_gradient(net, net.generator_loss, images, latent)])
            direction = np.random.default_rng(3).standard_normal(gradients[second_order].shape)
            direction /= np.linalg.norm(direction)
            start = [w.numpy() for w in weights]

            def loss_at(step):
                offset = 0
                for w, w0 in zip(weights, start):
                    w.assign(w0 + step * direction[offset:offset + w0.size].reshape(w0.shape))
                    offset += w0.size
                return float(net.generator_loss(images, None, latent))

            h = 1e-6
            slopes[second_order] = (gradients[second_order] @ direction, (loss_at(h) - loss_at(-h)) / (2 * h))
    finally:
        keras.config.set_floatx(floatx)
        keras.config.set_dtype_policy(policy)
    # Central differences in float64: truncation O(h²) and rounding ~1e-16·|f| / h, both far below 1e-5 of
    # the slope (measured 3e-8); the surrogate misses the dθ_D^K/dθ_G term (measured: 75% off, 11% apart).
    analytic, numeric = slopes[True]
    assert abs(analytic - numeric) <= 1e-5 * abs(numeric)
    surrogate, _ = slopes[False]
    assert abs(surrogate - numeric) > 0.1 * abs(numeric)
    assert np.linalg.norm(gradients[True] - gradients[False]) > 0.03 * np.linalg.norm(gradients[True])


def test_unrolled_gan_covers_more_modes_than_the_plain_gan():
    from apps.generative import unrolled

    # The scores on real samples: all 8 modes, and the 2-D Gaussian mass within 3σ, 1 - exp(-9/2) = 0.989
    # (binomial standard error on 4,000 samples 0.0017: 5 of them allowed).
    covered, quality, per_mode = unrolled.mode_scores(unrolled.ring_samples(4000, seed=5))
    assert covered == 8 and abs(quality - (1 - np.exp(-4.5))) < 5 * 0.0017 and per_mode.min() > 0.1

    # 600 steps through fit (the train_step override), K = 3, with steps 1.6 times the CLI's (Adam 8e-4 / 8e-3,
    # unroll step 0.05) to fit the budget. Seeds 0-5 measured: the plain GAN ends on 0-2 modes (0-12% high-quality
    # samples; it hops from spot to spot), the unrolled one on 5-8 (26-38%).
    final = {}
    for k in (0, 3):
        net = unrolled.compile_for_ring(unrolled.build(k, unroll_learning_rate=0.05, seed=0), 8e-4, 8e-3)
        final[k] = unrolled.train_on_ring(net, steps=600, seed=0).scores[-1]
    (plain_modes, plain_quality, _), (unrolled_modes, unrolled_quality, _) = final[0], final[3]
    assert unrolled_modes >= 4 and unrolled_modes >= plain_modes + 3, final
    assert unrolled_quality > plain_quality + 0.1, final


# --- pix2pix --------------------------------------------------------------------------------------------------

def test_patchgan_output_shape_and_receptive_field():
    from apps.generative import pix2pix

    discriminator = pix2pix.conditional_patch_discriminator((28, 28, 1))
    side, field, jump = pix2pix.patch_geometry(discriminator, 28)
    # conv 4x4/2, 4x4/2, 3x3/1, 'same': 28 -> 14 -> 7 -> 7; r = 1 + 3 + 3·2 + 2·4 = 18; jump 2·2·1 = 4
    assert (side, field, jump) == (7, 18, 4)
    assert discriminator.output_shape == (None, 7, 7, 1)

    # Measured: the pixels of the pair that move one logit (a non-zero gradient; LeakyReLU passes every one).
    rng = np.random.default_rng(0)
    drawing = tf.Variable(rng.uniform(size=(1, 28, 28, 1)).astype(np.float32))
    image = tf.Variable(rng.uniform(size=(1, 28, 28, 1)).astype(np.float32))

    def support(row, column):
        with tf.GradientTape() as tape:
            logit = discriminator([drawing, image])[0, row, column, 0]
        moved = np.argwhere(sum(np.abs(g.numpy()[0, ..., 0]) for g in tape.gradient(logit, [drawing, image])) > 0)
        return moved.min(axis=0), moved.max(axis=0) + 1

    low, high = support(3, 3)  # a centre logit: its whole field inside the 28x28 input
    assert tuple(high - low) == (field, field)
    low_right, _ = support(3, 4)
    low_down, _ = support(4, 3)
    assert tuple(low_right - low) == (0, jump) and tuple(low_down - low) == (jump, 0)
    low_corner, high_corner = support(0, 0)  # the corner logit's field is cut by the border (zero padding)
    assert tuple(low_corner) == (0, 0) and (high_corner < field).all()


@pytest.fixture(scope="module")
def trained_pix2pix():
    """A pix2pix generator trained 150 steps (batch 16, Adam 2e-3) on 480 Fashion-MNIST edge maps, and the
    validation pairs."""
    from apps.generative import pix2pix

    pairs = pix2pix.load_pairs("edges", limit=1000, seed=0)
    pairs["val"] = tuple(a[:300] for a in pairs["val"])
    pairs["train"] = tuple(a[:480] for a in pairs["train"])  # 30 batches of 16 ...
    net = pix2pix.build(learning_rate=2e-3, seed=0)
    l1 = pix2pix.train(net, pairs, epochs=5, batch_size=16, seed=0)  # ... 5 epochs: 150 steps
    return net.generator, pairs, l1


def test_pix2pix_training_lowers_validation_l1_far_below_the_baselines(trained_pix2pix):
    from apps.generative import pix2pix

    generator, pairs, l1 = trained_pix2pix
    drawings, images = pairs["val"]
    baselines = pix2pix.baselines(drawings, images, pairs["train"][1])
    # Answering the input, a black image or the mean item: 0.34, 0.28, 0.23; after 150 steps measured 0.10-0.11
    # (seeds 0, 1).
    assert l1 < 0.6 * min(baselines.values()), (l1, baselines)
    assert l1 == pytest.approx(pix2pix.validation_l1(generator, drawings, images), rel=1e-6)
    # The output follows the input: edges of one item give a different image than edges of another.
    outputs = np.asarray(generator(drawings[:2]))
    assert np.abs(outputs[0] - outputs[1]).mean() > 0.05


def test_pix2pix_generator_exports_with_parity(trained_pix2pix, tmp_path):
    from apps.generative import pix2pix
    from core import export

    generator, pairs, _ = trained_pix2pix
    sample = pairs["val"][0][:16]
    report = pix2pix.export_generator(generator, str(tmp_path), sample, pairs["train"][0][:64])  # ParityError beyond
    assert report["saved_model"].startswith(str(tmp_path / "generative_pix2pix"))
    assert set(report["tflite"]) == {"float", "dynamic", "int8"}
    assert 0 <= report["max_abs_diff"]["int8"] <= export.TOLERANCES["int8"]
    served = export.run_saved_model(report["saved_model"], {"drawing": sample})["image"]
    lite = export.run_tflite(report["tflite"]["float"], {"drawing": sample})["image"]
    keras_out = np.asarray(generator(sample))
    assert served.shape == (16, 28, 28, 1)
    assert np.abs(served - keras_out).max() <= export.TOLERANCES["float"]
    assert np.abs(lite - served).max() <= export.TOLERANCES["float"]
    dynamic = export.run_tflite(report["tflite"]["dynamic"], {"drawing": sample})["image"]
    assert np.abs(dynamic - served).max() <= export.TOLERANCES["dynamic"]


# --- the command line -----------------------------------------------------------------------------------------

def test_concept_verbs_refuse_bad_values_in_one_line(tmp_path):
    from apps.generative.__main__ import main, parse_args

    assert parse_args(["unrolled"]).unroll_steps == 5 and parse_args(["pix2pix"]).condition == "edges"
    with pytest.raises(UserError, match="--unroll-steps"):
        main(["unrolled", "--unroll-steps", "0", "--run", str(tmp_path)])
    with pytest.raises(UserError, match="--steps"):
        main(["unrolled", "--steps", "3", "--run", str(tmp_path)])
    with pytest.raises(UserError, match="--epochs"):
        main(["pix2pix", "--epochs", "0", "--run", str(tmp_path)])
    with pytest.raises(SystemExit):
        main(["pix2pix", "--condition", "scribble"])
