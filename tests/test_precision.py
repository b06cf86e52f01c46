"""core.precision: the dtype policy scope, float32 outputs, loss scaling, and what bfloat16 costs in accuracy."""

import keras
import numpy as np
import pytest

from core import precision
from core.errors import UserError

# bfloat16 keeps 8 significant bits (7 stored + the implicit one): a value rounds to within 2^-8 of itself,
# relative. A forward pass through the two-layer model below rounds about 8 times on any path (the input, each
# kernel and each layer's output cast to bfloat16, the ReLU's and the logits' sums), so its loss is off by at
# most ~8 * 2^-8 ~ 3 % in the worst (all same-sign) case; the few training steps start from the same float32
# weights and move them by lr * gradient, whose bfloat16 error is of the same relative size, so the gap stays
# of that order. Tolerance: 8 * 2^-8 relative.
BFLOAT16_ROUNDING = 2.0 ** -8
BFLOAT16_TOLERANCE = 8 * BFLOAT16_ROUNDING
# float32 with and without XLA: the same arithmetic, with sums possibly in another order. float32 rounds to
# 2^-24 ~ 6e-8 relative; a sum of n = 64 terms reordered differs by at most ~n * 2^-24 ~ 4e-6: 1e-5 relative.
FLOAT32_TOLERANCE = 1e-5
STEPS = 5


def small_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((16,), name="x")
    hidden = keras.layers.Dense(64, activation="relu", name="hidden")(inputs)
    outputs = keras.layers.Dense(4, activation="softmax", name="probabilities")(hidden)
    return keras.Model(inputs, outputs)


def batch():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 16)).astype("float32")
    return x, (x[:, 0] > 0).astype("int32") + 2 * (x[:, 1] > 0).astype("int32")


def trained_loss(name, jit=False):
    """The training loss of the small model after STEPS SGD steps on one batch, built under policy `name`."""
    with precision.policy(name):
        model = precision.float32_outputs(small_model())
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy", jit_compile=jit)
    x, y = batch()
    losses = [float(model.train_on_batch(x, y)) for _ in range(STEPS)]
    return losses, model


def test_policy_scope_unknown_names_float32_outputs_and_loss_scaling():
    before = keras.config.dtype_policy().name
    with pytest.raises(RuntimeError, match="inside"):
        with precision.policy("mixed_bfloat16"):
            assert keras.config.dtype_policy().name == "mixed_bfloat16"
            raise RuntimeError("inside")
    assert keras.config.dtype_policy().name == before == "float32"  # restored although the body raised
    with pytest.raises(UserError, match=r"unknown precision 'float64'; choose one of: float32, mixed_bfloat16") as e:
        with precision.policy("float64"):
            pass
    assert "\n" not in str(e.value)

    with precision.policy("mixed_bfloat16"):
        reduced = small_model()
    assert reduced.get_layer("hidden").compute_dtype == "bfloat16"
    assert reduced.get_layer("hidden").kernel.dtype == "float32"  # variables stay float32
    assert reduced.outputs[0].dtype == "bfloat16"
    cast = precision.float32_outputs(reduced)
    assert cast is not reduced and cast.outputs[0].dtype == "float32"
    x, _ = batch()
    assert keras.ops.convert_to_numpy(cast(x)).dtype == np.float32
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(cast(x)),
                                  keras.ops.convert_to_numpy(reduced(x)).astype(np.float32))  # same weights
    plain = small_model()
    assert precision.float32_outputs(plain) is plain

    with precision.policy("mixed_float16"):
        half = precision.float32_outputs(small_model())
    half.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    # Keras wraps it: float16's smallest normal, 6e-5, would flush small gradients to 0 without a loss scale.
    assert isinstance(half.optimizer, keras.optimizers.LossScaleOptimizer)
    plain.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    assert not isinstance(plain.optimizer, keras.optimizers.LossScaleOptimizer)


def test_bfloat16_training_tracks_float32_within_its_rounding_and_xla_within_float32s():
    reference, model = trained_loss("float32")
    assert reference[-1] < reference[0]  # it learns
    assert model.get_layer("hidden").compute_dtype == "float32"
    bfloat16, model = trained_loss("mixed_bfloat16")
    assert model.get_layer("hidden").compute_dtype == "bfloat16"
    assert all(v.dtype == "float32" for v in model.trainable_variables)
    gap = abs(bfloat16[-1] - reference[-1]) / reference[-1]
    # Within bfloat16's rounding of float32, and really computed in bfloat16 (not float32 by mistake): a gap
    # above float32's rounding.
    assert FLOAT32_TOLERANCE < gap < BFLOAT16_TOLERANCE, gap
    jit, _ = trained_loss("float32", jit=True)
    np.testing.assert_allclose(jit, reference, rtol=FLOAT32_TOLERANCE)
