"""Architecture blocks: NumPy references, float64 gradients, round trips, TFLite."""

import keras
import numpy as np
import pytest
from layer_checks import (
    assert_close,
    check_config_roundtrip,
    check_save_load,
    check_tflite,
    gradient_error,
    np_batchnorm,
    np_conv2d,
    np_relu,
    rand,
    randomize_weights,
    tiny_model,
    to_numpy,
)

from layers import ResidualBlock


# ----------------------------------------------------------------- ResidualBlock
def np_residual(block, x):
    """y = relu(F(x) + shortcut(x)), He et al. 2016 (post-activation), or
    y = F(x) + shortcut(x) with BN-ReLU before each conv (pre-activation)."""
    def conv(c, v):
        return np_conv2d(v, np.asarray(c.kernel), None if c.bias is None else np.asarray(c.bias), c.strides[0])

    def norm(n, v):
        return np_batchnorm(v, n) if block.use_batchnorm else v

    if block.preactivation:
        h, shortcut = x, x
        for i, (c, n) in enumerate(zip(block.convs, block.norms)):
            h = np_relu(norm(n, h))
            if i == 0 and block.use_projection:
                shortcut = conv(block.proj_conv, h)
            h = conv(c, h)
        return h + shortcut
    h = x
    for i, (c, n) in enumerate(zip(block.convs, block.norms)):
        h = norm(n, conv(c, h))
        if i < len(block.convs) - 1:
            h = np_relu(h)
    shortcut = norm(block.proj_norm, conv(block.proj_conv, x)) if block.use_projection else x
    return np_relu(h + shortcut)


RESIDUAL_CASES = {
    "basic_identity": dict(filters=3),
    "basic_stride2": dict(filters=4, strides=2),
    "bottleneck_stride2": dict(filters=2, strides=2, bottleneck=True),
    "bottleneck_identity": dict(filters=2, bottleneck=True),  # 8 -> 8 channels: identity shortcut
    "preact_proj": dict(filters=4, strides=2, preactivation=True),
    "no_bn_forced_proj": dict(filters=3, projection=True, use_batchnorm=False),
}


def _residual_input(kw):
    channels = 8 if kw.get("bottleneck") and kw.get("strides", 1) == 1 else 3
    return rand(2, 5, 6, channels, seed=1)


@pytest.mark.parametrize("name", list(RESIDUAL_CASES))
def test_residual_forward_matches_numpy(name):
    kw = RESIDUAL_CASES[name]
    x = _residual_input(kw)
    block = ResidualBlock(**kw)
    block.build(x.shape)
    randomize_weights(block, seed=2)
    y = to_numpy(block(x, training=False))
    assert y.shape == block.compute_output_shape(x.shape)
    expected_proj = kw.get("projection", kw.get("strides", 1) != 1 or x.shape[-1] != block.out_channels)
    assert block.use_projection == expected_proj
    assert_close(y, np_residual(block, x.astype(np.float64)), atol=1e-4)


def test_residual_constructor_contract():
    # The classifier app relies on this exact signature.
    b = ResidualBlock(16, strides=2)
    assert (b.filters, b.strides, b.bottleneck, b.projection, b.preactivation, b.use_batchnorm) == (
        16, 2, False, None, False, True)
    assert ResidualBlock(8, bottleneck=True).out_channels == 32
    y = ResidualBlock(8, strides=2)(rand(1, 8, 8, 3))
    assert y.shape == (1, 4, 4, 8)


def test_residual_training_updates_batchnorm():
    block = ResidualBlock(3)
    x = rand(4, 4, 4, 3, seed=3)
    block(x, training=True)
    assert not np.allclose(np.asarray(block.norms[0].moving_mean), 0.0)


@pytest.mark.parametrize("name", ["basic_stride2", "preact_proj", "bottleneck_identity"])
def test_residual_gradient_float64(name):
    kw = RESIDUAL_CASES[name]
    x = _residual_input(kw)[:1, :3, :4].astype(np.float64)
    block = ResidualBlock(**kw, dtype="float64")
    block.build(x.shape)
    randomize_weights(block, seed=4)
    assert gradient_error(lambda v: block(v, training=False), [x]) < 1e-6


def test_residual_roundtrip(tmp_path):
    x = rand(2, 5, 6, 3, seed=5)
    block = ResidualBlock(4, strides=2, preactivation=False, dropout=0.3)
    block.build(x.shape)
    randomize_weights(block, seed=6)
    check_config_roundtrip(block, x, training=False)
    block2 = ResidualBlock(2, bottleneck=True, strides=2)
    model = tiny_model(block2, x)
    randomize_weights(block2, seed=7)
    check_save_load(model, x, tmp_path)


def test_residual_tflite(tmp_path):
    x = rand(2, 6, 6, 3, seed=8)
    block = ResidualBlock(4, strides=2)
    model = tiny_model(block, x)
    randomize_weights(block, seed=9)
    check_tflite(model, x, tmp_path)


def test_residual_dropout_sits_between_the_convs_in_training_only():
    """Wide ResNet dropout (Zagoruyko & Komodakis 2016): inference is deterministic and equals the block
    without dropout; training masks differ per call. The block is linear in the dropped activations
    (pre-activation, no BN: y = conv1(drop(relu(conv0(relu(x))))) + x), so with inverted dropout the mean
    of many training outputs is the inference output, within 5 standard errors. Dropout on the output
    would zero half the outputs; between the convs each output sums 9*C dropped inputs."""
    block = ResidualBlock(4, preactivation=True, use_batchnorm=False, dropout=0.5)
    x = np.repeat(rand(1, 5, 5, 4, seed=10), 512, axis=0)  # one image, 512 independent masks
    block.build(x.shape)
    randomize_weights(block, seed=11)
    inference = to_numpy(block(x[:1], training=False))
    np.testing.assert_array_equal(inference, to_numpy(block(x[:1], training=False)))
    assert block.get_config()["dropout"] == 0.5
    plain = ResidualBlock.from_config({**block.get_config(), "dropout": 0.0})
    plain.build(x.shape)
    plain.set_weights(block.get_weights())
    np.testing.assert_allclose(inference, to_numpy(plain(x[:1], training=True)), atol=1e-5)
    np.testing.assert_allclose(inference, np_residual(block, x[:1].astype(np.float64)), atol=1e-4)

    samples = to_numpy(block(x, training=True))
    assert np.abs(samples[0] - samples[1]).max() > 1e-3                      # a fresh mask per example
    assert (np.abs(samples - inference) > 1e-6).mean() > 0.95               # nearly every output moves
    assert (samples == 0).mean() < 0.01  # dropout on the output would zero half of them
    standard_error = samples.std(axis=0) / np.sqrt(len(samples))
    assert (np.abs(samples.mean(axis=0) - inference[0]) < 5 * standard_error + 1e-5).mean() > 0.99


def test_residual_configs_without_dropout_still_load():
    config = ResidualBlock(4, strides=2).get_config()
    config.pop("dropout")  # a block saved before the option existed
    block = ResidualBlock.from_config(config)
    assert block.dropout == 0.0
    with pytest.raises(ValueError, match="ResidualBlock expects 0 <= dropout < 1, got 1.0"):
        ResidualBlock(4, dropout=1.0)


def test_residual_shape_errors():
    with pytest.raises(ValueError, match=r"ResidualBlock expects a 4-D input \(batch, height, width, channels\), "
                                         r"got shape \(None, 5\)"):
        ResidualBlock(4)(keras.Input((5,)))
    with pytest.raises(ValueError, match="ResidualBlock with projection=False expects input channels 4"):
        ResidualBlock(4, projection=False)(rand(1, 4, 4, 3))


# ----------------------------------------------------------------- other blocks (table-driven)
from layer_checks import Case, case_forward, case_gradient, case_roundtrip, case_shape_error, case_tflite, np_maxpool  # noqa: E402

from layers import DenseBlock, InceptionBlock, NiNBlock, ResNeXtBlock, SqueezeExcitation, TransitionLayer  # noqa: E402

NHWC_ERR = r"expects a 4-D input \(batch, height, width, channels\), got shape \(2, 5\)"
BAD = rand(2, 5, seed=99)


def conv_ref(conv, x, groups=1):
    y = np_conv2d(x, np.asarray(conv.kernel), None if conv.bias is None else np.asarray(conv.bias),
                  conv.strides[0], groups=groups)
    return np_relu(y) if conv.activation is keras.activations.relu else y


def inception_ref(l, xs):
    x = xs[0]
    return np.concatenate([conv_ref(l.b1, x), conv_ref(l.b3, conv_ref(l.b3r, x)),
                           conv_ref(l.b5, conv_ref(l.b5r, x)), conv_ref(l.bp, np_maxpool(x, 3, 1, "same"))], -1)


def dense_ref(l, xs):
    x = xs[0]
    for unit in l.units:
        h = x
        for norm, conv in unit:
            h = conv_ref(conv, np_relu(np_batchnorm(h, norm) if l.use_batchnorm else h))
        x = np.concatenate([x, h], -1)
    return x


def transition_ref(l, xs):
    h = conv_ref(l.conv, np_relu(np_batchnorm(xs[0], l.norm)))
    n, hh, ww, c = h.shape
    h = h[:, :hh // 2 * 2, :ww // 2 * 2]
    return h.reshape(n, hh // 2, 2, ww // 2, 2, c).mean(axis=(2, 4))


def se_ref(l, xs):
    x = xs[0]
    z = x.mean(axis=(1, 2))
    s = np_relu(z @ np.asarray(l.squeeze.kernel) + np.asarray(l.squeeze.bias))
    s = 1 / (1 + np.exp(-(s @ np.asarray(l.excite.kernel) + np.asarray(l.excite.bias))))
    return x * s[:, None, None, :]


def resnext_ref(l, xs):
    x = xs[0]
    h = x
    for i, (conv, norm) in enumerate(zip(l.convs, l.norms)):
        h = np_batchnorm(conv_ref(conv, h, groups=conv.groups), norm)
        if i < 2:
            h = np_relu(h)
    sc = np_batchnorm(conv_ref(l.proj_conv, x), l.proj_norm) if l.use_projection else x
    return np_relu(h + sc)


def nin_ref(l, xs):
    h = xs[0]
    for conv in l.convs:
        h = conv_ref(conv, h)
    return h


X = rand(2, 5, 5, 4, seed=11)
XG = rand(1, 3, 3, 4, seed=12)
XS = rand(1, 2, 2, 4, seed=14)  # grouped conv in float64 is slow on CPU: fewest finite differences
CASES = [
    Case("inception", lambda d: InceptionBlock(2, 2, 3, 1, 2, 2, dtype=d), X, inception_ref,
         bad=(BAD, "InceptionBlock " + NHWC_ERR), grad_inputs=[XG]),
    Case("dense_block", lambda d: DenseBlock(2, 3, dtype=d), X, dense_ref, call_kwargs={"training": False},
         bad=(BAD, "DenseBlock " + NHWC_ERR), grad_inputs=[XG]),
    Case("dense_block_bottleneck", lambda d: DenseBlock(2, 2, bottleneck=True, dtype=d), X, dense_ref,
         call_kwargs={"training": False}, bad=(BAD, "DenseBlock " + NHWC_ERR), grad_inputs=[XS]),
    Case("transition", lambda d: TransitionLayer(0.5, dtype=d), X, transition_ref, call_kwargs={"training": False},
         bad=(BAD, "TransitionLayer " + NHWC_ERR), grad_inputs=[rand(1, 4, 4, 4, seed=13)]),
    Case("squeeze_excitation", lambda d: SqueezeExcitation(2, dtype=d), X, se_ref,
         bad=(BAD, "SqueezeExcitation " + NHWC_ERR), grad_inputs=[XG]),
    Case("resnext", lambda d: ResNeXtBlock(6, cardinality=2, group_width=2, strides=2, dtype=d), X, resnext_ref,
         call_kwargs={"training": False}, bad=(BAD, "ResNeXtBlock " + NHWC_ERR), grad_inputs=[XS]),
    Case("nin", lambda d: NiNBlock(3, 3, mlp_filters=(4, 2), dtype=d), X, nin_ref,
         bad=(BAD, "NiNBlock " + NHWC_ERR), grad_inputs=[XG]),
]


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_block_forward(case):
    case_forward(case)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_block_gradient(case):
    case_gradient(case)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_block_roundtrip(case, tmp_path):
    case_roundtrip(case, tmp_path)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_block_tflite(case, tmp_path):
    case_tflite(case, tmp_path)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_block_shape_error(case):
    case_shape_error(case)


def test_transition_compression_validated():
    with pytest.raises(ValueError, match="TransitionLayer expects 0 < compression <= 1"):
        TransitionLayer(1.5)
