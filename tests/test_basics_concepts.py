"""The basics app, the rest of the lecture notes: stable softmax, normalization, learning rate and batch size,
gradient clipping, ReLU bias, capacity and convolution — each test asserts the effect the notes describe."""

import os

import numpy as np
import pytest

EPS32 = float(np.finfo(np.float32).eps)


# --- numerics: stable softmax / log-sum-exp ------------------------------------------------------------------

def test_naive_softmax_overflows_and_the_stable_one_does_not():
    from apps.basics import numerics

    softmax_012 = np.array([0.09003057, 0.24472847, 0.66524096])  # softmax((0, 1, 2)), log Σ exp = 2.40760596
    for z, expected in ((np.array([[1000.0, 1001.0, 1002.0]], np.float32), softmax_012),
                        (np.array([[-1000.0, -1001.0, -1002.0]], np.float32), softmax_012[::-1])):
        out = numerics.compare(z)
        for name, (naive, stable) in out.items():
            assert not np.all(np.isfinite(naive)), name  # the naive form breaks ...
            assert np.all(np.isfinite(stable)), name  # ... the stable one does not
        np.testing.assert_allclose(out["softmax"][1][0], expected, rtol=1e-5)
        np.testing.assert_allclose(out["logsumexp"][1], z.max() + 0.40760596, rtol=1e-6)


def test_stable_forms_equal_the_naive_ones_where_those_do_not_overflow():
    import tensorflow as tf

    from apps.basics import numerics

    z = np.random.default_rng(0).normal(0, 3, size=(256, 10)).astype(np.float32)
    # exp turns the rounding of its argument (absolute, ≤ eps·|z|) into a relative error of the same size, and a
    # sum of n positive terms adds ≤ n·eps relative: rtol = eps·(max|z| + n), with a factor 4 for the division/log
    rtol = 4 * EPS32 * (np.abs(z).max() + z.shape[1])
    for name, (naive, stable) in numerics.compare(z).items():
        assert np.all(np.isfinite(naive))
        if name == "softmax":
            np.testing.assert_allclose(stable, naive, rtol=rtol, atol=0)
        else:  # logsumexp and log-softmax: an absolute error of rtol·|value| + the log's rounding
            np.testing.assert_allclose(stable, naive, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(numerics.stable_softmax(z), tf.nn.softmax(z).numpy(), rtol=rtol)
    np.testing.assert_allclose(numerics.stable_logsumexp(z), tf.reduce_logsumexp(z, axis=-1).numpy(), rtol=rtol)


# --- normalization --------------------------------------------------------------------------------------------

def test_standardization_uses_training_statistics_for_every_split():
    from apps.basics import normalization

    rng = np.random.default_rng(0)
    x_train = rng.normal(5, 2, size=(500, 3)).astype(np.float32)
    x_val = rng.normal(8, 4, size=(200, 3)).astype(np.float32)  # a shifted split: its own statistics differ
    train_out, val_out = normalization.standardize_splits(x_train, x_val)
    np.testing.assert_allclose(train_out.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(train_out.std(axis=0), 1, rtol=1e-5)
    np.testing.assert_allclose(val_out, (x_val - x_train.mean(axis=0)) / x_train.std(axis=0), rtol=1e-5, atol=1e-5)
    assert np.all(val_out.mean(axis=0) > 1.0)  # not re-centred with its own mean: (8 - 5) / 2 = 1.5


@pytest.mark.parametrize("shape", [(32, 16), (8, 6, 6, 4)], ids=["dense", "conv_per_channel"])
def test_scratch_batch_norm_equals_keras(shape):
    from apps.basics import normalization

    rng = np.random.default_rng(1)
    scales = rng.uniform(0.1, 5, shape[-1])
    batches = [(rng.normal(3, 2, shape) * scales).astype(np.float32) for _ in range(4)]
    r = normalization.compare_with_keras(batches, momentum=0.8, epsilon=1e-3, seed=1)
    m = int(np.prod(shape[:-1]))  # values per channel statistic
    # Keras computes x·s + (β - μ·s) with s = γ/√(σ²+ε), we compute γ(x - μ)/√(σ²+ε) + β: each rounds a few times
    # (eps relative per operation) on terms as large as |x·s|, |μ·s| and |β|; μ and σ² are sums of m terms whose
    # rounding grows with log2(m) (pairwise). Factor 4 of slack on top.
    s = np.abs(r["gamma"]) / np.sqrt(np.min([b.var(axis=tuple(range(len(shape) - 1))) for b in batches]) + 1e-3)
    big = max(float(np.abs(b).max()) for b in batches)
    atol = 4 * (4 + np.log2(m)) * EPS32 * (2 * big * s.max() + np.abs(r["beta"]).max())
    for ours, theirs in r["training"]:
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=atol)
    np.testing.assert_allclose(*r["moving_mean"], rtol=0, atol=(4 + np.log2(m)) * EPS32 * big)
    np.testing.assert_allclose(*r["moving_variance"], rtol=(4 + np.log2(m)) * EPS32 * 4, atol=0)
    assert np.abs(r["moving_mean"][0]).min() > 0.1  # the statistics have moved away from their start (0, 1)
    ours, theirs = r["inference"]
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=atol)
    train_out = r["training"][0][0]  # same batch: inference (running averages) ≠ training (batch statistics)
    assert np.abs(ours - train_out).max() > 0.1


def test_batch_norm_makes_a_deep_sigmoid_mlp_train_faster():
    from apps.basics import normalization
    from apps.basics.common import digits_arrays

    (x, y), (x_test, y_test) = digits_arrays()
    r = normalization.with_and_without(x, y, x_test, y_test, epochs=3, depth=5, learning_rate=0.5)
    without, with_bn = r["without BN"]["epoch_loss"], r["with BN"]["epoch_loss"]
    assert with_bn[-1] < 0.5 * without[-1], (without, with_bn)
    assert without[-1] > 2.0  # stuck near log(10) = 2.30: the sigmoid stack does not learn in 3 epochs


# --- learning rate and batch size ---------------------------------------------------------------------------

def test_learning_rate_sweep_slow_best_diverged():
    from apps.basics import learning_rate

    x, t, _ = learning_rate.digits_regression()
    sweep = learning_rate.learning_rate_sweep(x[:600], t[:600], [1e-4, 1e-2, 1.0, 30.0], epochs=2)
    assert sweep[30.0]["status"] == "diverged"  # caught, not a crash
    assert sweep[1e-4]["status"] == "ok" and sweep[1e-4]["final"] > 0.97 * sweep[1e-4]["initial"]  # barely moves
    finals = {lr: r["final"] for lr, r in sweep.items() if r["status"] == "ok"}
    assert min(finals, key=finals.get) in (1e-2, 1.0), finals  # the best rate is a middle one
    assert finals[1.0] < 0.3 * finals[1e-4]


def test_smaller_batches_reach_a_lower_loss_per_epoch_at_the_same_rate():
    from apps.basics import learning_rate

    x, t, _ = learning_rate.digits_regression()
    x, t = x[:300], t[:300]
    curves = learning_rate.batch_sizes(x, t, [len(x), 32, 1], learning_rate=0.05, epochs=2)
    assert all(c[-1, 0] == 2 * len(x) for c in curves.values())  # the same examples seen
    full, mini, single = (curves[s][-1, 2] for s in (len(x), 32, 1))
    assert mini < 0.8 * full and single < mini, (full, mini, single)


# --- gradient clipping ------------------------------------------------------------------------------------------

def test_clip_by_global_norm_caps_the_sgd_update_at_lr_times_c():
    import tensorflow as tf

    from apps.basics import clipping
    from apps.basics.common import digits_arrays

    grads = [tf.constant([[3.0, 4.0]]), tf.constant([12.0])]  # global norm 13
    for c in (1.0, 13.0, 100.0):
        expected, _ = tf.clip_by_global_norm(grads, c)
        for ours, theirs in zip(clipping.clip_by_global_norm(grads, c), expected):
            np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6)

    (x, y), _ = digits_arrays()
    t = np.eye(10, dtype=np.float32)[y[:32]]
    lr, c = 0.01, 1.0
    raw, change = clipping.applied_update(x[:32], t, clip_norm=c, learning_rate=lr)
    assert raw > 100 * c  # the setting explodes: the raw gradient is far beyond c
    model = clipping.exploding_mlp(64)
    weight_norm = np.sqrt(sum(np.sum(w.numpy().astype(np.float64) ** 2) for w in model.trainable_variables))
    # each float32 weight is rounded after the update (error ≤ eps/2·|w|), so the measured change is off by at
    # most eps/2·‖θ‖ in norm
    tolerance = EPS32 / 2 * weight_norm
    assert abs(change - lr * c) <= tolerance, (change, lr * c, tolerance)  # clipped: exactly η·c, not η·‖g‖


def test_clipping_keeps_the_exploding_network_finite_and_training():
    from apps.basics import clipping
    from apps.basics.common import digits_arrays

    (x, y), _ = digits_arrays()
    t = np.eye(10, dtype=np.float32)[y]
    unclipped = clipping.train(x, t, clip_norm=None, learning_rate=0.01, epochs=1)
    clipped = clipping.train(x, t, clip_norm=10.0, learning_rate=0.01, epochs=1)
    assert unclipped["diverged"] and len(unclipped["step_loss"]) < 20  # blows up within a few steps
    assert not clipped["diverged"] and np.all(np.isfinite(clipped["curve"][:, 2]))
    assert clipped["curve"][-1, 2] < 0.01 * clipped["curve"][0, 2]
    assert np.mean(clipped["grad_norm"] > 10.0) > 0.1  # clipping was active, not a bystander


# --- ReLU bias initialization ---------------------------------------------------------------------------------

def test_positive_relu_bias_leaves_fewer_dead_units_in_a_narrow_deep_net():
    from apps.basics import relu_bias

    x, _ = relu_bias.shifted_digits(-1.0)
    dead = relu_bias.dead_at_init(x, widths=(8,), biases=(0.0, 0.1), seeds=range(10))
    zero, positive = dead[8, 0.0], dead[8, 0.1]
    assert positive.mean() < zero.mean() - 0.02, (zero, positive)  # measured: 0.108 vs 0.062 over these seeds
    for seed in range(3):  # first layer, same weights: a unit dead with b = 0.1 is dead with b = 0 (max wᵀx ≤ -0.1)
        first = [relu_bias.dead_per_layer(relu_bias.relu_mlp(64, width=8, bias=b, seed=seed), x)[0] for b in (0, 0.1)]
        assert first[1] <= first[0]


# --- capacity -------------------------------------------------------------------------------------------------

def test_one_wide_and_three_narrow_layers_both_fit_far_better_than_a_line():
    from apps.basics import capacity

    _, _, results = capacity.approximation("sin", (16,), steps=2000, n=256)
    assert abs(results["shallow 197"]["params"] - results["deep 16x3"]["params"]) <= 3  # equal parameter counts
    for name in ("shallow 197", "deep 16x3"):
        assert results[name]["mse"] < 0.05 * results["linear"]["mse"], (name, results[name]["mse"])


def test_training_error_falls_with_model_size():
    from apps.basics import capacity

    errors = capacity.model_size_curve((1, 4, 64), steps=300)
    train = [errors[w][0] for w in (1, 4, 64)]
    assert train[0] > train[1] >= train[2] and train[0] - train[2] > 0.3, errors


def test_generalization_gap_shrinks_with_more_training_data():
    from apps.basics import capacity

    errors = capacity.learning_curve((50, 1437), width=64, steps=300)
    gap = {n: va - tr for n, (tr, va) in errors.items()}
    assert gap[50] > gap[1437] + 0.05, errors


# --- convolution ----------------------------------------------------------------------------------------------

def test_convolution_backward_pass_matches_autodiff_and_finite_differences():
    from apps.basics import convolution

    check = convolution.gradient_check(seed=2)
    assert check["forward_vs_tf"] < 1e-12
    assert max(check["vs_tape"]) < 1e-12  # float64: the same sums in another order
    assert max(check["vs_finite_differences"]) < 1e-6  # central differences: O(eps²) truncation + rounding/eps

    rng = np.random.default_rng(0)  # the flip matters: the unflipped kernel gives another ∂L/∂x
    x, w, g = rng.normal(size=(6, 6, 2)), rng.normal(size=(3, 3, 2, 2)), rng.normal(size=(4, 4, 2))
    dx = convolution.conv_backward(x, w, g)[0]
    unflipped = convolution.correlate(np.pad(g, ((2, 2), (2, 2), (0, 0))), w.transpose(0, 1, 3, 2))
    assert np.max(np.abs(dx - unflipped)) > 0.1


def test_output_size_and_parameter_count_match_keras():
    from apps.basics import convolution

    assert convolution.conv_parameters(5, 3, 1) == 5 * 5 * 3 + 1  # 75 weights + 1 bias per filter on RGB
    for n, f, p, s, c_in, c_out in convolution.ARITHMETIC_CASES:
        side, params = convolution.keras_conv(n, f, p, s, c_in, c_out)
        assert (convolution.output_size(n, f, p, s), convolution.conv_parameters(f, c_in, c_out)) == (side, params)


def test_receptive_field_of_stacked_convolutions_matches_keras():
    from apps.basics import convolution

    for layers in convolution.STACKS.values():
        r = convolution.receptive_field(layers)
        assert convolution.measured_receptive_field(layers) == (r, r), layers
    assert convolution.receptive_field([(3, 1)] * 3) == convolution.receptive_field([(7, 1)]) == 7


def test_hand_designed_kernels_detect_edges_and_orientation():
    from apps.basics import convolution

    step = np.zeros((32, 32), np.float32)
    step[:, 16:] = 1.0  # a vertical edge
    k = convolution.kernels()
    r = convolution.apply_kernels(step, {"sx": k["sobel x (∂/∂x)"], "sy": k["sobel y (∂/∂y)"],
                                         "g0": k["gabor 0°"], "g90": k["gabor 90°"]})
    inner = (slice(8, 24), slice(8, 24))  # away from the zero padding
    np.testing.assert_allclose(r["sx"][inner][:, 7:9].min(), 0.5, rtol=1e-6)  # a jump of 1 seen by (1 + 2 + 1)/8
    assert np.abs(r["sx"][inner][:, :6]).max() < 1e-6 and np.abs(r["sy"][inner]).max() < 1e-6
    assert np.abs(r["g0"][inner]).max() > 10 * np.abs(r["g90"][inner]).max()  # 0°: responds across vertical edges


def test_numerics_and_convolution_runs_write_their_pngs(tmp_path, capsys):
    from apps.basics import convolution, numerics

    for module in (numerics, convolution):
        pngs = module.run(folder=str(tmp_path / module.__name__.rsplit(".", 1)[1]), small=True)["pngs"]
        assert pngs and all(p.startswith(str(tmp_path)) and os.path.getsize(p) > 10_000 for p in pngs)
    printed = capsys.readouterr().out
    assert "first failing c" in printed and "Keras params" in printed
