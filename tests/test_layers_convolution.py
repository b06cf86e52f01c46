"""Dilated, depthwise-separable and factorised (Inception v3) convolutions: NumPy references, float64
gradients, round trips, TFLite; what the lecture notes claim of them (receptive fields by impulse
response, weight counts); and the models built from them (mobilenet, inception_v3, segment's dilated)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from layer_checks import (
    Case,
    case_forward,
    case_gradient,
    case_roundtrip,
    case_shape_error,
    check_tflite,
    np_batchnorm,
    np_conv2d,
    np_maxpool,
    np_relu,
    rand,
    randomize_weights,
    to_numpy,
)

from core.training import set_seed
from layers import DilatedConvBlock, FactorizedInceptionBlock, GridReductionBlock, ResidualBlock, SeparableConvBlock


# ----------------------------------------------------------------- NumPy references
def zero_dilated(kernel, rate):
    """The (k-1)*rate+1 kernel with rate-1 zeros between the taps of `kernel`."""
    kh, kw = kernel.shape[:2]
    big = np.zeros(((kh - 1) * rate + 1, (kw - 1) * rate + 1) + kernel.shape[2:])
    big[::rate, ::rate] = kernel
    return big


def unit_ref(conv, norm, x, rate=1, activation=np_relu):
    """conv -> BN (inference statistics) -> activation, the convs written as plain cross-correlations."""
    bias = None if conv.bias is None else np.asarray(conv.bias)
    y = np_conv2d(x, zero_dilated(np.asarray(conv.kernel), rate), bias, conv.strides[0])
    if isinstance(norm, keras.layers.BatchNormalization):
        y = np_batchnorm(y, norm)
    return activation(y)


def chain_ref(units, x):
    for conv, norm in units:
        x = unit_ref(conv, norm, x)
    return x


def np_avgpool_same(x, pool=3):
    """Stride-1 'same' average pooling that, like TF, averages only the pixels inside the image."""
    p = pool // 2
    padded = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    inside = np.pad(np.ones_like(x), ((0, 0), (p, p), (p, p), (0, 0)))
    h, w = x.shape[1:3]
    total = sum(padded[:, i:i + h, j:j + w] for i in range(pool) for j in range(pool))
    count = sum(inside[:, i:i + h, j:j + w] for i in range(pool) for j in range(pool))
    return total / count


def dilated_ref(l, xs):
    return unit_ref(l.conv, l.norm, xs[0], l.dilation_rate, np_relu if l.activation == "relu" else (lambda v: v))


def separable_ref(l, xs):
    """Depthwise: input channel c alone through its own k x k filters (the m of them give output channels
    c*m .. c*m+m-1); then pointwise: a 1x1 conv mixing the channels. BN -> ReLU after each."""
    x = xs[0]
    kernel = np.asarray(l.depthwise.kernel)                      # (k, k, C, m)
    channels, m = kernel.shape[2:]
    depthwise = np.concatenate([np_conv2d(x[..., c:c + 1], kernel[:, :, c:c + 1, :], None, l.strides)
                                for c in range(channels)], axis=-1)
    if l.depthwise.bias is not None:
        depthwise = depthwise + np.asarray(l.depthwise.bias)
    if l.use_batchnorm:
        depthwise = np_batchnorm(depthwise, l.depthwise_norm)
    return unit_ref(l.pointwise, l.pointwise_norm, np_relu(depthwise))


def kernels(units):
    return [tuple(conv.kernel.shape[:2]) for conv, _ in units]


def inception_ref(l, xs):
    n = l.asymmetric  # the paper's branches: 3x3 (Fig. 5) or 1xn -> nx1 (Fig. 6) where Inception v1 had 3x3, 5x5
    factorized = [(3, 3)] if n is None else [(1, n), (n, 1)]
    assert kernels(l.branch_single) == [(1, 1), *factorized]
    assert kernels(l.branch_double) == [(1, 1), *factorized, *factorized]
    x = xs[0]
    return np.concatenate([chain_ref(l.branch_1x1, x), chain_ref(l.branch_single, x), chain_ref(l.branch_double, x),
                           chain_ref(l.branch_pool, np_avgpool_same(x))], axis=-1)


def reduction_ref(l, xs):
    assert kernels(l.branch_single) == [(1, 1), (3, 3)] and kernels(l.branch_double) == [(1, 1), (3, 3), (3, 3)]
    assert [conv.strides[0] for conv, _ in l.branch_single + l.branch_double] == [1, 2, 1, 1, 2]
    x = xs[0]
    return np.concatenate([chain_ref(l.branch_single, x), chain_ref(l.branch_double, x),
                           np_maxpool(x, 3, 2, "same")], axis=-1)


NHWC_ERR = r"expects a 4-D input \(batch, height, width, channels\), got shape \(2, 5\)"
BAD = rand(2, 5, seed=99)
X = rand(2, 7, 7, 4, seed=21)
# Float64 Jacobians cost a forward pass per input value and a backward pass per output value: tiny inputs.
XG = rand(1, 3, 3, 2, seed=22)
XS = rand(1, 2, 2, 2, seed=20)
TRAINING_OFF = {"training": False}
CASES = [
    Case("dilated_rate2", lambda d: DilatedConvBlock(3, dilation_rate=2, dtype=d), X, dilated_ref,
         call_kwargs=TRAINING_OFF, bad=(BAD, "DilatedConvBlock " + NHWC_ERR), grad_inputs=[XG]),
    Case("dilated_rate3_linear_no_bn", lambda d: DilatedConvBlock(2, dilation_rate=3, use_batchnorm=False,
                                                                  activation=None, dtype=d),
         X, dilated_ref, bad=(BAD, "DilatedConvBlock " + NHWC_ERR), grad_inputs=[XG]),
    Case("separable", lambda d: SeparableConvBlock(5, dtype=d), X, separable_ref, call_kwargs=TRAINING_OFF,
         bad=(BAD, "SeparableConvBlock " + NHWC_ERR), grad_inputs=[XG]),
    Case("separable_stride2_multiplier2_no_bn", lambda d: SeparableConvBlock(3, strides=2, depth_multiplier=2,
                                                                             use_batchnorm=False, dtype=d),
         X, separable_ref, bad=(BAD, "SeparableConvBlock " + NHWC_ERR), grad_inputs=[XG]),
    Case("inception_v3_3x3", lambda d: FactorizedInceptionBlock(2, 2, 3, 2, 3, 2, dtype=d), X, inception_ref,
         call_kwargs=TRAINING_OFF, bad=(BAD, "FactorizedInceptionBlock " + NHWC_ERR), grad=(),
         grad_reason="the ops of inception_v3_asymmetric with 3x3 kernels for 1x3/3x1: checked there"),
    Case("inception_v3_asymmetric", lambda d: FactorizedInceptionBlock(2, 2, 3, 2, 3, 2, asymmetric=3, dtype=d),
         X, inception_ref, call_kwargs=TRAINING_OFF, bad=(BAD, "FactorizedInceptionBlock " + NHWC_ERR),
         grad_inputs=[XS]),
    Case("grid_reduction", lambda d: GridReductionBlock(2, 3, 2, 3, dtype=d), X, reduction_ref,
         call_kwargs=TRAINING_OFF, bad=(BAD, "GridReductionBlock " + NHWC_ERR), grad_inputs=[XG]),
]


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_convolution_forward(case):
    case_forward(case)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_convolution_gradient(case):
    case_gradient(case)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_convolution_roundtrip(case, tmp_path):
    case_roundtrip(case, tmp_path)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_convolution_shape_error(case):
    case_shape_error(case)


def test_convolution_blocks_export_to_tflite(tmp_path):
    """One export for all four blocks in a chain (each conversion costs seconds): dilated convs, depthwise
    convs, 1xn/nx1 kernels, average and max pooling all reach the TFLite builtins with Keras' values."""
    x = rand(2, 12, 12, 3, seed=23)
    inputs = keras.Input(x.shape[1:], name="x0")
    y = DilatedConvBlock(4, dilation_rate=2)(inputs)
    y = SeparableConvBlock(6, strides=2)(y)
    y = FactorizedInceptionBlock(2, 2, 3, 2, 3, 2, asymmetric=3)(y)
    y = GridReductionBlock(2, 3, 2, 3)(y)
    model = keras.Model(inputs, y)
    randomize_weights(model, seed=24)
    check_tflite(model, x, tmp_path)


def test_bad_arguments_are_one_line_value_errors():
    with pytest.raises(ValueError, match="DilatedConvBlock expects dilation_rate >= 1, got 0"):
        DilatedConvBlock(4, dilation_rate=0)
    with pytest.raises(ValueError, match="FactorizedInceptionBlock expects asymmetric=None or n >= 2, got 1"):
        FactorizedInceptionBlock(1, 1, 1, 1, 1, 1, asymmetric=1)


# ----------------------------------------------------------------- what the notes claim
def support(gradient):
    """(rows, cols) spanned by the nonzero entries of an (H, W) input gradient."""
    rows, cols = np.nonzero(np.abs(gradient) > 0)
    return (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) if rows.size else (0, 0)


def impulse_response(model, x, channel):
    """Gradient of the centre pixel of output `channel` w.r.t. the input, summed over input channels: its
    support is the receptive field. All weights and inputs are positive, so no ReLU is off and no two paths
    cancel: the support is exactly the receptive field, not a subset of it."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = model(x, training=False)
        centre = y[0, y.shape[1] // 2, y.shape[2] // 2, channel]
    return tape.gradient(centre, x).numpy()[0].sum(axis=-1)


def positive_weights(layer, seed):
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in layer.get_weights()])


def test_dilated_block_is_a_conv_with_a_zero_dilated_kernel():
    """The dilated conv equals a plain (k-1)r+1 conv whose kernel has r-1 zeros between the taps, on every
    pixel (borders included: 'same' pads for the dilated extent), yet keeps only k*k*C*C' weights."""
    x = rand(2, 11, 11, 3, seed=25)
    block = DilatedConvBlock(4, kernel_size=3, dilation_rate=4, use_batchnorm=False, activation=None)
    block(x)
    randomize_weights(block, seed=26)
    y = to_numpy(block(x))
    plain = keras.layers.Conv2D(4, 9, padding="same")
    plain.build(x.shape)
    plain.set_weights([zero_dilated(np.asarray(block.conv.kernel), 4).astype("float32"), np.asarray(block.conv.bias)])
    np.testing.assert_allclose(y, to_numpy(plain(x)), atol=1e-5)
    assert block.conv.kernel.shape == (3, 3, 3, 4) and plain.kernel.shape == (9, 9, 3, 4)


def test_context_module_receptive_field_doubles_with_each_rate():
    """Rates 1, 2, 4, 8 of 3x3 convs: receptive fields 3, 7, 15, 31 (1 + 2 * sum of the rates), at full
    resolution; four undilated 3x3 convs see only 9 -- plain convs would need 15 layers for 31."""
    x = np.random.default_rng(27).uniform(0.5, 1.5, (1, 41, 41, 2)).astype("float32")
    for rates, fields in [((1, 2, 4, 8), (3, 7, 15, 31)), ((1, 1, 1, 1), (3, 5, 7, 9))]:
        blocks = [DilatedConvBlock(2, dilation_rate=r, use_batchnorm=False) for r in rates]
        stack = keras.Sequential([keras.Input(x.shape[1:]), *blocks])
        for i, block in enumerate(blocks):
            positive_weights(block, seed=i)
        for depth, field in enumerate(fields, start=1):
            head = keras.Sequential(blocks[:depth])
            assert support(impulse_response(head, x, 0)) == (field, field), (rates, depth)
        assert stack(x).shape == x.shape  # no resolution lost


def test_separable_block_weights_follow_mobilenets_count():
    """Depthwise k*k*C plus pointwise C*C' weights against a full conv's k*k*C*C': the ratio 1/C' + 1/k^2
    of Howard et al. (2017), Sec. 3.1; BN adds its 2C + 2C' trainable scales and offsets."""
    k, c_in, c_out = 3, 16, 32
    block = SeparableConvBlock(c_out, kernel_size=k)
    block.build((None, 8, 8, c_in))
    full = keras.layers.Conv2D(c_out, k, use_bias=False)
    full.build((None, 8, 8, c_in))
    separable_weights = block.depthwise.kernel.shape.num_elements() + block.pointwise.kernel.shape.num_elements()
    assert separable_weights == k * k * c_in + c_in * c_out == 656
    assert full.count_params() == k * k * c_in * c_out == 4608
    assert separable_weights / full.count_params() == pytest.approx(1 / c_out + 1 / k ** 2)
    trainable = sum(w.shape.num_elements() for w in block.trainable_weights)
    assert trainable == separable_weights + 2 * c_in + 2 * c_out


def test_depthwise_then_pointwise_is_a_full_conv_with_a_factorised_kernel():
    """Without the BN-ReLU between them, depthwise then pointwise is one k x k conv whose kernel is
    K[i, j, c, o] = D[i, j, c] P[c, o]: a full conv restricted to rank-one (space x channel) kernels."""
    x = rand(2, 6, 6, 4, seed=28)
    block = SeparableConvBlock(5, use_batchnorm=False)
    block(x)
    randomize_weights(block, seed=29)
    depthwise, pointwise = np.asarray(block.depthwise.kernel)[..., 0], np.asarray(block.pointwise.kernel)[0, 0]
    separable = to_numpy(block.pointwise(block.depthwise(x)))
    kernel = depthwise[..., None] * pointwise[None, None]
    bias = np.asarray(block.depthwise.bias) @ pointwise + np.asarray(block.pointwise.bias)
    np.testing.assert_allclose(separable, np_conv2d(x.astype(np.float64), kernel, bias), atol=1e-5)


@pytest.mark.parametrize("asymmetric,fields", [(None, (1, 3, 5)), (5, (1, 5, 9))])
def test_factorized_branches_see_what_they_replace_with_fewer_weights(asymmetric, fields):
    """Impulse responses of the 1x1, single and double branches: 1, 3, 5 (two 3x3 = one 5x5) or, with
    1xn -> nx1, 1, n, 2n-1. Weights: two 3x3 convs 9RD + 9DD against a 5x5's 25RD (18/25 at R = D);
    1xn + nx1: n(R + F)F against n*n*R*F."""
    block = FactorizedInceptionBlock(2, 3, 3, 3, 3, 2, asymmetric=asymmetric, use_batchnorm=False)
    x = np.random.default_rng(30).uniform(0.5, 1.5, (1, 13, 13, 2)).astype("float32")
    block(x)
    positive_weights(block, seed=31)
    first_channels = np.cumsum([0, block.filters_1x1, block.filters_3x3])  # the branches' first output channels
    for channel, field in zip(first_channels, fields):
        assert support(impulse_response(block, x, int(channel))) == (field, field)
    weights = lambda units: sum(conv.kernel.shape.num_elements() for conv, _ in units)
    r = f = d = 3
    if asymmetric is None:
        assert weights(block.branch_double[1:]) == 9 * r * d + 9 * d * d == 162 < 25 * r * d == 225
        assert weights(block.branch_single[1:]) == 9 * r * f
    else:
        n = asymmetric
        assert weights(block.branch_single[1:]) == n * r * f + n * f * f == 90 < n * n * r * f == 225
        assert weights(block.branch_double[1:]) == 4 * n * d * d


def test_grid_reduction_halves_the_grid_and_adds_the_branch_channels():
    """ceil(H/2) x ceil(W/2) x (F3 + Fd + C): the pooling branch carries the input's channels through,
    exactly the 3x3/2 max pool of the input, so nothing is squeezed through a narrow conv first."""
    for shape, out in [((1, 28, 28, 5), (1, 14, 14, 3 + 4 + 5)), ((1, 7, 7, 2), (1, 4, 4, 3 + 4 + 2))]:
        block = GridReductionBlock(2, 3, 2, 4)
        x = rand(*shape, seed=32)
        y = to_numpy(block(x, training=False))
        assert y.shape == out == block.compute_output_shape(shape)
        np.testing.assert_array_equal(y[..., 7:], np_maxpool(x, 3, 2, "same").astype("float32"))


# ----------------------------------------------------------------- the models built from them
def fashion_batch(n=64):
    from core.data import load_dataset

    images = load_dataset("fashion_mnist", limit=n).train.batch(n)
    x, y = next(iter(images.as_numpy_iterator()))
    return x, keras.ops.one_hot(y, 10)


def eager_losses(model, x, y, steps=4, learning_rate=0.3):
    """Training-mode losses of `steps` momentum-SGD steps on one batch. Eager, as tracing would cost more
    than a few steps, and SGD, as an eager Adam update costs seconds for a model of many small variables."""
    optimizer = keras.optimizers.SGD(learning_rate, momentum=0.9)
    loss_fn, losses = keras.losses.CategoricalCrossentropy(), []
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        losses.append(float(loss))
    return losses


def falling(losses):
    """Every step lowers the loss, by 10 % in all (seeds 0-4: 18-33 % for the classify models, 45-51 % for
    the dilated one)."""
    return np.isfinite(losses).all() and (np.diff(losses) < 0).all() and losses[-1] < 0.9 * losses[0]


def check_keras_file(model, x, tmp_path):
    from core.training import load_model_file

    path = str(tmp_path / "model.keras")
    model.save(path)
    np.testing.assert_allclose(load_model_file(path)(x, training=False), model(x, training=False), atol=1e-5)


@pytest.mark.parametrize("name", ["mobilenet", "inception_v3"])
def test_classify_models_of_the_blocks_learn_a_batch_and_reload(name, tmp_path):
    from apps.classify.models import build_model

    set_seed(0)
    model = build_model(name, (28, 28, 1), 10, width=0.25 if name == "mobilenet" else 0.125)
    blocks = [l for l in model.layers if isinstance(l, (SeparableConvBlock, FactorizedInceptionBlock,
                                                         GridReductionBlock))]
    if name == "mobilenet":
        assert [b.strides for b in blocks] == [1, 2, 1, 2, 1]           # 28 -> 14 -> 7
    else:
        assert [type(b).__name__[0] + str(b.asymmetric if hasattr(b, "asymmetric") else "") for b in blocks] == [
            "G", "FNone", "FNone", "G", "F3", "F3"]                     # reduction, Fig. 5 x2, reduction, Fig. 6 x2
    assert blocks[-1].output.shape[1:3] == (7, 7)
    x, y = fashion_batch()
    losses = eager_losses(model, x, y)
    assert falling(losses), losses
    check_keras_file(model, x[:8], tmp_path)


def test_wide_resnet_drops_out_inside_its_blocks_while_training_only():
    from apps.classify.models import MODELS, build_model

    set_seed(0)
    x = np.random.default_rng(33).uniform(0, 255, (4, 28, 28, 1)).astype("float32")
    model = build_model("wide_resnet", (28, 28, 1), 10, width=0.125)
    assert {l.dropout for l in model.layers if isinstance(l, ResidualBlock)} == {0.3}
    np.testing.assert_array_equal(model(x, training=False), model(x, training=False))
    features = keras.Model(model.input, model.get_layer("pool").output)  # before the softmax can saturate
    assert np.abs(features(x, training=True) - features(x, training=True)).max() > 1e-4
    without = MODELS.get("wide_resnet")((28, 28, 1), 10, width=0.125, block_dropout=0.0)  # not a CLI option
    features = keras.Model(without.input, without.get_layer("pool").output)
    np.testing.assert_array_equal(features(x, training=True), features(x, training=True))  # BN alone: deterministic


def test_dilated_segmentation_model_keeps_its_resolution_learns_and_exports(tmp_path):
    from apps.segment.models import CONTEXT_RATES, build_model
    from core import export, scenes

    set_seed(0)
    model = build_model("dilated", (32, 32, 1), 11, width=0.5)
    context = [model.get_layer(f"context_rate{r}") for r in CONTEXT_RATES]
    assert [l.dilation_rate for l in context] == [1, 2, 4, 8]
    assert {l.output.shape[1:3] for l in context} == {(8, 8)}              # 1/4 resolution, never pooled again
    data = scenes.generate(scenes.SceneSpec(size=32, min_scale=0.6, max_scale=1.0, max_objects=2, clutter=2),
                           count=64)
    x, y = data["image"].astype("float32"), keras.ops.one_hot(data["semantic"], 11)
    losses = eager_losses(model, x, y, learning_rate=0.1)
    assert falling(losses), losses
    check_keras_file(model, x[:8], tmp_path)
    saved = str(tmp_path / "saved")
    export.export_saved_model(model, saved, ["images"], ["probabilities"])
    export.convert_to_tflite(saved, str(tmp_path / "float.tflite"))
    lite = export.run_tflite(str(tmp_path / "float.tflite"), {"images": x[:4]})["probabilities"]
    assert np.abs(lite - model(x[:4], training=False).numpy()).max() <= export.TOLERANCES["float"]
