"""The basics app: initialization, activations, regularization and pre-training at reduced size."""

import numpy as np
import pytest


@pytest.fixture(scope="module")
def digits_inputs():
    from apps.basics import initialization

    (x, y), _ = initialization.standardized_inputs("digits", limit=512)
    return x, y


# --- initialization ------------------------------------------------------------------------------------------

def test_he_keeps_relu_variance_while_small_random_and_xavier_shrink_it(digits_inputs):
    from apps.basics import initialization

    x, y = digits_inputs
    ratios = {}
    for init in ("he", "xavier", "small random"):
        model = initialization.build_mlp(x.shape[1], depth=12, width=128, activation="relu", init=init)
        s = initialization.layer_statistics(model, x, y)
        ratios[init] = s["activation_variance"] / s["input_variance"]
    assert np.all((ratios["he"] > 1 / 8) & (ratios["he"] < 8)), ratios["he"]
    assert ratios["xavier"][-1] < 0.01 * ratios["xavier"][0]  # halves per layer under ReLU
    assert ratios["small random"][-1] < 1e-12


def test_zero_init_stays_symmetric_and_he_does_not(digits_inputs):
    import keras

    from apps.basics import initialization

    x, y = digits_inputs
    distinct = {}
    for init in ("zero", "he"):
        model = initialization.build_mlp(x.shape[1], depth=3, width=16, activation="tanh", init=init)
        stats = initialization.layer_statistics(model, x, y)
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True))
        model.fit(x, y, epochs=2, batch_size=64, verbose=0)
        distinct[init] = [initialization.distinct_units(layer.kernel.numpy()) for layer in model.layers[:-1]]
        if init == "zero":
            assert np.all(stats["gradient_std"] == 0)
    assert distinct["zero"] == [1, 1, 1]
    assert min(distinct["he"]) == 16


# --- activations ---------------------------------------------------------------------------------------------

def test_activation_curves_and_derivatives():
    from apps.basics import activations

    z, fz = activations.curves(np.array([-3.0, -1.0, 0.0, 1.0, 3.0], np.float32))
    np.testing.assert_allclose(fz["relu"][1], [0, 0, 0, 1, 1])
    np.testing.assert_allclose(fz["leaky_relu"][1][[0, 1, 3, 4]], [0.1, 0.1, 1, 1], rtol=1e-6)
    np.testing.assert_allclose(fz["prelu"][1][:2], [0.25, 0.25], rtol=1e-6)
    np.testing.assert_allclose(fz["sign"][0], [-1, -1, 1, 1, 1])
    np.testing.assert_allclose(fz["sign"][1], 0)
    np.testing.assert_allclose(fz["sigmoid"][1][2], 0.25, rtol=1e-6)
    np.testing.assert_allclose(fz["tanh"][1], 1 - np.tanh(z.astype(np.float64)) ** 2, atol=1e-6)
    np.testing.assert_allclose(fz["selu"][1][3], 1.0507, rtol=1e-4)
    np.testing.assert_allclose(fz["elu"][0][0], np.exp(-3) - 1, rtol=1e-5)


def test_selu_self_normalizes(digits_inputs):
    from apps.basics import activations

    x, _ = digits_inputs
    stats = activations.selu_self_normalization(x[:256], depth=10, width=128)
    means, variances = stats["selu"]
    assert np.all(np.abs(means) < 0.3) and np.all((variances > 0.5) & (variances < 2.0)), (means, variances)
    assert stats["relu"][1][-1] < 0.1  # without the fixed point the variance drifts away


def test_high_learning_rate_kills_relu_units():
    from apps.basics import activations
    from apps.basics.common import load_arrays

    x, y = load_arrays("fashion_mnist", limit=1500)["train"]
    low, high = activations.dying_relu(x, y, (0.01, 0.5))
    assert high["dead_after"] > low["dead_after"] + 0.05, (low, high)


# --- regularization ------------------------------------------------------------------------------------------

def test_soft_threshold_is_the_l1_proximal_step():
    from apps.basics.regularization import SoftThreshold

    w = np.array([-0.5, -0.01, 0.0, 0.005, 0.3], np.float32)
    np.testing.assert_allclose(SoftThreshold(0.01)(w).numpy(), [-0.49, 0.0, 0.0, 0.0, 0.29], atol=1e-7)


def test_l1_yields_more_exact_zeros_than_l2():
    from apps.basics import regularization

    data = regularization.small_data(200, val_size=200)
    l1 = regularization.train_variant("l1", data, epochs=6, width=64, l1=3e-2)
    l2 = regularization.train_variant("l2", data, epochs=6, width=64)
    assert l1["exact_zeros"] > 0.02 and l1["exact_zeros"] > l2["exact_zeros"], (l1["exact_zeros"], l2["exact_zeros"])
    assert l1["test_accuracy"] > 0.4  # sparse, and still a classifier


# --- layer-wise pre-training --------------------------------------------------------------------------------

def test_layerwise_pretraining_learns_codes_and_initializes_the_classifier(digits_inputs):
    from apps.basics import pretraining

    x, _ = digits_inputs
    x = (x - x.min()) / (x.max() - x.min())  # autoencoders with sigmoid decoders want [0, 1]
    encoders, losses = pretraining.pretrain_layers(x, hidden=(32, 16), epochs=4)
    assert all(last < first for first, last in losses), losses
    model = pretraining.classifier(encoders, hidden=(32, 16), input_dim=x.shape[1])
    for dense, encoder in zip(model.layers[:-1], encoders):
        np.testing.assert_array_equal(dense.kernel.numpy(), encoder.kernel.numpy())
