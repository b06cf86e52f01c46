"""What bench/run.py reads off a run beside its timings: which ops the XNNPACK delegate took from a TFLite
file (the inference table's "ops taken by XNNPACK" and "ops left to TFLite's builtin kernels") and where a
training step's time goes (the train table's profile columns). Small real models and steps whose answer is
known by construction."""

import keras
import numpy as np
import tensorflow as tf

from bench import run
from core import export


def _delegation(model, tmp_path, sample):
    saved = export.export_saved_model(model, str(tmp_path / "1"), ["x"], ["y"])
    path = export.convert_to_tflite(saved, str(tmp_path / "float.tflite"))
    runner = export.tflite_signature_runner(path)
    runner(x=sample)  # the default delegate is applied by the first call at the latest
    return run.xnnpack_partitions(runner._interpreter)


def test_an_op_xnnpack_lacks_splits_the_graph_into_two_partitions(tmp_path):
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(6)(inputs)
    # CUMSUM has no XNNPACK kernel: the dense layers on either side land in two partitions
    outputs = keras.layers.Dense(3)(keras.layers.Lambda(lambda t: keras.ops.cumsum(t, axis=-1))(hidden))
    taken, total, partitions, left = _delegation(keras.Model(inputs, outputs), tmp_path,
                                                 np.ones((1, 8), np.float32))
    assert dict(left) == {"CUMSUM": 1}
    assert (taken, total, partitions) == (total - 1, total, 2) and total >= 3


def test_a_graph_xnnpack_runs_whole_is_one_partition(tmp_path):
    inputs = keras.Input((8,))
    outputs = keras.layers.Dense(3)(keras.layers.Dense(6, activation="relu")(inputs))
    taken, total, partitions, left = _delegation(keras.Model(inputs, outputs), tmp_path,
                                                 np.ones((1, 8), np.float32))
    assert (taken, partitions, dict(left)) == (total, 1, {})


def test_step_profile_counts_matrix_products_and_nothing_else_as_products():
    a = tf.random.stateless_normal([768, 768], seed=[1, 2])

    @tf.function
    def products():  # two large matrix products and one small element-wise op
        return tf.reduce_sum(tf.matmul(tf.matmul(a, a), a))

    @tf.function
    def element_wise():
        return tf.reduce_sum(tf.exp(a) * a + a)

    share, top = run.step_profile(products)
    assert share > 0.8 and top[0][0] in run.PRODUCT_OPS, (share, top)   # MatMul, or _MklMatMul with oneDNN
    share, top = run.step_profile(element_wise)
    assert share == 0 and top and not {name for name, _ in top} & set(run.PRODUCT_OPS), top
    assert abs(sum(s for _, s in run.step_profile(element_wise, top=50)[1]) - 1) < 1e-6  # shares of all op time


def test_dqn_rates_are_read_against_cleanrls_of_the_same_run():
    rows = [{"implementation": "this suite (apps.rl train --task dqn)", "env_steps_per_s": 15.3},
            {"implementation": "CleanRL dqn_atari (PyTorch CPU)", "env_steps_per_s": 13.9}]
    run.add_reference_ratio(rows)
    assert [r["vs_reference"] for r in rows] == ["1.10x", "1.00x"]
    missing = [{"implementation": "this suite", "env_steps_per_s": 15.3},
               {"implementation": "CleanRL dqn_atari", "env_steps_per_s": "not installed"}]
    run.add_reference_ratio(missing)
    assert all("vs_reference" not in r for r in missing)   # no ratio against a row that did not run
