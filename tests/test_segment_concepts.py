"""The segment app's lecture concepts: sliding-window classification vs its convolutional twin (the same
numbers, far fewer FLOPs), and dense-CRF refinement by mean field — each test asserts the effect."""

import numpy as np
import pytest
import tensorflow as tf

from apps.segment import crf
from apps.segment import sliding_window as sw
from apps.segment.__main__ import main, parse_args
from apps.segment.models import build_model
from core import scenes
from core.cli import resolve_config
from core.errors import run_cli

EPS32 = float(np.finfo(np.float32).eps)
TINY_SCENES = scenes.SceneSpec(size=32, max_objects=2, min_scale=0.8, max_scale=1.0, clutter=2)


@pytest.fixture(scope="module")
def tiny_scenes():
    """Two real 32×32 scenes (Fashion-MNIST items) and their masks."""
    return sw.scene_arrays(TINY_SCENES, "validation", 2)


def accumulation_length(model):
    """Σ over layers of the terms each output sums (fan-in + bias): a float32 result of such a chain of
    dot products is within (that many)·eps of exact, relative to the same chain on absolute values."""
    return sum(int(np.prod(layer.kernel.shape[:-1])) + 1 for layer in model.layers if hasattr(layer, "kernel")) + 1


# --- sliding windows vs the convolutional twin ---------------------------------------------------------------

def test_explicit_windows_equal_the_patch_net_run_convolutionally(tiny_scenes):
    images, _ = tiny_scenes
    tf.keras.utils.set_random_seed(0)
    patch_net = sw.build_patch_net(11)
    # Nonnegative weights and biases on nonnegative pixels: no sum cancels, so the float32 bound below is
    # tight (with signed random weights, |W|·|x| exceeds the logits ~10^4-fold and the bound would hide a bug).
    rng = np.random.default_rng(0)
    patch_net.set_weights([np.abs(w) if w.ndim > 1 else rng.uniform(0, 0.1, w.shape).astype(np.float32)
                           for w in patch_net.get_weights()])
    twin = sw.convolutional_twin(patch_net)
    explicit = sw.window_logits(sw.compiled(patch_net), images)             # 2 × 1024 windows, one by one
    stitched = sw.shift_and_stitch(sw.compiled(twin), images)               # 16 shifted passes each
    # Each float32 logit is a chain of dot products with n = Σ fan-in (+ bias) terms in all: it is within
    # n·eps of exact, relative to the same chain on absolute values, which here is the logit itself (max
    # pooling does not enlarge an error). Two computations: 2×.
    tolerance = 2 * accumulation_length(twin) * EPS32 * np.maximum(explicit, stitched)
    assert explicit.shape == stitched.shape == (2, 32, 32, 11)
    assert np.all(np.abs(explicit - stitched) <= tolerance)
    # the logits differ from window to window far more than that: a misplaced window or weight would show
    assert np.median(np.abs(explicit - explicit.mean(axis=(1, 2), keepdims=True))) > 100 * tolerance.max()
    # One pass labels every 4th pixel: output (i, j) is the window of pixel (4i + 2, 4j + 2) ...
    one_pass = sw.convolutional_logits(sw.compiled(twin), images, shift=(2, 2))
    assert one_pass.shape == (2, 8, 8, 11)
    np.testing.assert_allclose(one_pass, explicit[:, 2::4, 2::4], rtol=0, atol=tolerance.max())
    # ... and explicit windows at that stride see the same windows.
    strided = sw.window_logits(sw.compiled(patch_net), images, step=4, offset=2)
    np.testing.assert_allclose(strided, explicit[:, 2::4, 2::4], rtol=0, atol=tolerance.max())


def profiled_flops(model, input_shape):
    """TensorFlow's own count (tf.profiler) of the multiply-adds of the Conv2D, MatMul and transposed-conv
    ops in the graph of `model` on a batch of `input_shape` (profile counts 2 FLOPs per multiply-add)."""
    from tensorflow.python.profiler import model_analyzer, option_builder

    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec(input_shape, tf.float32)).graph
    options = option_builder.ProfileOptionBuilder(
        option_builder.ProfileOptionBuilder.float_operation()).with_empty_output().build()
    kinds, total = {"Conv2D", "MatMul", "Conv2DBackpropInput"}, 0
    nodes = [model_analyzer.profile(graph, options=options, cmd="graph")]
    while nodes:
        node = nodes.pop()
        nodes.extend(node.children)
        if node.name != "_TFProfRoot" and graph.get_operation_by_name(node.name).type in kinds:
            total += node.float_ops
    return total


def test_cost_ratio_matches_the_arithmetic():
    size, shifts = 32, sw.STRIDE ** 2
    patch_net = sw.build_patch_net(11)
    twin = sw.convolutional_twin(patch_net)
    fcn = build_model("fcn", (size, size, 1), 11)
    costs = sw.cost_table(patch_net, twin, fcn, size)
    # The per-layer arithmetic, written out for this patch net: conv1 28²·9·1·16, conv2 12²·9·16·32,
    # conv3 4²·9·32·64, fc1 1024·64, fc2 64·11 multiply-adds per window.
    assert costs["per_window"] == 2 * (28 * 28 * 9 * 16 + 12 * 12 * 9 * 16 * 32 + 4 * 4 * 9 * 32 * 64
                                       + 1024 * 64 + 64 * 11)
    # TensorFlow counts the same numbers in the graphs it runs: S² windows, 16 shifted passes, one FCN pass.
    padded = size + sw.PATCH - 1
    windows_counted = profiled_flops(patch_net, (size * size, sw.PATCH, sw.PATCH, 1))
    twin_counted = profiled_flops(twin, (shifts, padded, padded, 1))
    assert windows_counted == costs["windows every pixel"] == size * size * costs["per_window"]
    assert twin_counted == costs["conv twin, 16 shifted passes"] == shifts * costs["per_pass"]
    assert profiled_flops(fcn, (1, size, size, 1)) == costs["FCN"]
    # Shared computation: the same every-pixel logits for several times fewer FLOPs, and more so on
    # bigger scenes (the overlap of neighbouring windows grows with the share of interior pixels).
    assert windows_counted / twin_counted > 4
    big = sw.cost_table(patch_net, twin, build_model("fcn", (96, 96, 1), 11), 96)
    assert big["windows every pixel"] / big["conv twin, 16 shifted passes"] > 8
    assert big["windows every pixel"] / big["FCN"] > 50


# --- dense CRF ---------------------------------------------------------------------------------------------------

def numpy_mean_field_step(q, probabilities, image, p):
    """The K&K update written pixel pair by pixel pair, in float64."""
    n, k = q.shape
    unaries = -np.log(np.maximum(probabilities, crf.FLOOR))
    where = crf.positions(int(np.sqrt(n))).astype(np.float64)
    intensity = image.reshape(-1).astype(np.float64)
    pairwise, row_sums = np.zeros((n, k)), np.zeros(n)
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            distance2 = np.sum((where[i] - where[j]) ** 2)
            kernel = (p.appearance_weight * np.exp(-distance2 / (2 * p.theta_alpha ** 2)
                                                   - (intensity[i] - intensity[j]) ** 2 / (2 * p.theta_beta ** 2))
                      + p.smoothness_weight * np.exp(-distance2 / (2 * p.theta_gamma ** 2)))
            row_sums[i] += kernel
            for label in range(k):
                pairwise[i, label] += kernel * sum(q[j, other] for other in range(k) if other != label)
    energy = -unaries - pairwise
    energy -= energy.max(axis=1, keepdims=True)
    return np.exp(energy) / np.exp(energy).sum(axis=1, keepdims=True), unaries, row_sums


def test_one_mean_field_step_equals_the_update_formula_in_numpy():
    rng = np.random.default_rng(0)
    side, k = 5, 4
    image = rng.uniform(0, 255, (side, side)).astype(np.float32)
    probabilities = rng.dirichlet(np.ones(k), side * side).astype(np.float32)
    q = rng.dirichlet(np.ones(k), side * side).astype(np.float32)
    params = crf.CRFParams(appearance_weight=2.0, theta_alpha=2.0, theta_beta=60.0, smoothness_weight=1.5,
                           theta_gamma=1.0)
    expected, unaries, row_sums = numpy_mean_field_step(q.astype(np.float64), probabilities, image, params)
    got = crf.mean_field_step(tf.constant(q), crf.unary(probabilities), crf.appearance_rows(image, params, block=7),
                              crf.gaussian_matrix(side, params.theta_gamma), crf.potts(k), params).numpy()
    # float32: each energy -ψ_u(l) - Σ_l' μ Σ_j k_ij Q_j(l') is a chain of sums of N + K terms (plus a few
    # roundings: scaling, exp, log, the j = i subtraction) of total size ≤ |ψ_u| + Σ_j k_ij, so its error is
    # ≤ (N + K + 8)·eps·that; an energy error e moves a softmax output by at most 2e. Factor 2 of slack.
    energy_scale = np.abs(unaries).max() + row_sums.max()
    tolerance = 2 * 2 * (side * side + k + 8) * EPS32 * energy_scale
    np.testing.assert_allclose(got, expected, rtol=0, atol=tolerance)
    assert np.abs(expected - q).max() > 100 * tolerance                   # the step did move Q
    assert row_sums.max() > 1                                              # with a pairwise term that matters


def test_zero_pairwise_weight_returns_the_networks_argmax(tiny_scenes):
    images, _ = tiny_scenes
    rng = np.random.default_rng(1)
    probabilities = tf.nn.softmax(rng.normal(0, 3, (32, 32, 11)).astype(np.float32)).numpy()
    off = crf.CRFParams(appearance_weight=0.0, smoothness_weight=0.0, iterations=3)
    refined = crf.refine(probabilities, images[0], off)
    np.testing.assert_array_equal(refined.argmax(-1), probabilities.argmax(-1))
    # softmax(log P) = P: only rounding (a few eps relative) and the floor separate them
    np.testing.assert_allclose(refined, probabilities, rtol=16 * EPS32, atol=crf.FLOOR)
    on = crf.refine(probabilities, images[0], crf.CRFParams())
    assert (on.argmax(-1) != probabilities.argmax(-1)).mean() > 0.2        # the default pairwise term does act


def piecewise_constant_scene(rng, side=24, flip=0.15, confidence=0.55):
    """Four flat quadrants (intensities 30, 90, 160, 230; label = quadrant) and a noisy labelling: a share
    `flip` of the pixels gets another random label, with probability `confidence` on the given label."""
    image = np.zeros((side, side), np.float32)
    truth = np.zeros((side, side), np.int64)
    half = side // 2
    for label, (rows, cols) in enumerate([(slice(0, half), slice(0, half)), (slice(0, half), slice(half, None)),
                                          (slice(half, None), slice(0, half)), (slice(half, None), slice(half, None))]):
        image[rows, cols], truth[rows, cols] = (30, 90, 160, 230)[label], label
    noisy = truth.copy()
    flipped = rng.random(truth.shape) < flip
    noisy[flipped] = (truth[flipped] + rng.integers(1, 4, flipped.sum())) % 4
    probabilities = np.full((side, side, 4), (1 - confidence) / 3, np.float32)
    np.put_along_axis(probabilities, noisy[..., None], confidence, axis=-1)
    return image, truth, noisy, probabilities


def test_crf_removes_isolated_wrong_pixels():
    image, truth, noisy, probabilities = piecewise_constant_scene(np.random.default_rng(2))
    errors_before = int((noisy != truth).sum())
    errors_after = int((crf.refine(probabilities, image).argmax(-1) != truth).sum())
    assert errors_before > 50
    assert errors_after <= errors_before // 5, (errors_before, errors_after)
    # The appearance kernel alone does it too; neither kernel switched off changes nothing.
    appearance_only = crf.CRFParams(smoothness_weight=0.0)
    assert (crf.refine(probabilities, image, appearance_only).argmax(-1) != truth).sum() <= errors_before // 5
    nothing = crf.CRFParams(appearance_weight=0.0, smoothness_weight=0.0)
    assert (crf.refine(probabilities, image, nothing).argmax(-1) != truth).sum() == errors_before


# --- the verbs ---------------------------------------------------------------------------------------------------

def test_verbs_show_their_defaults_and_refuse_bad_input_in_one_line(tmp_path, capsys):
    for verb in ("sliding-window", "crf"):
        with pytest.raises(SystemExit) as exit_info:
            main([verb, "--help"])
        assert exit_info.value.code == 0
        assert "default:" in capsys.readouterr().out
    # The CLI's CRF is the experiment's default CRF, and a typed flag reaches it.
    assert resolve_config(crf.CRFParams, parse_args(["crf"])) == crf.CRFParams()
    assert resolve_config(crf.CRFParams, parse_args(["crf", "--iterations", "2"])).iterations == 2
    cases = [(["crf", "--from-run", str(tmp_path / "nothing")], "no training run"),
             (["crf", "--iterations", "0"], "--iterations must be at least 1"),
             (["crf", "--theta-beta", "0"], "--theta-beta must be positive"),
             (["crf", "--scenes", "1"], "--scenes must be at least 2"),
             (["sliding-window", "--steps", "0"], "--steps must be at least 1"),
             (["sliding-window", "--seed", "-1"], "--seed must be at least 0, got -1"),
             (["crf", "--seed", "-1"], "--seed must be at least 0, got -1"),
             (["crf", "--smoothness-weight", "-1"], "--smoothness-weight must be at least 0")]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            run_cli(main, argv, prog="apps.segment")
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("apps.segment: error: ") and message in err and "\n" not in err, err
