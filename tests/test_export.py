"""core.export.export_model on its own: integer inputs through full-int8
conversion, app-specific parity rules, and the files beside the SavedModel."""

import os

import keras
import numpy as np
import pytest

from core import export


def token_model():
    """Integer token ids -> class probabilities (an embedding bag)."""
    ids = keras.Input((6,), dtype="int32", name="ids")
    x = keras.layers.Embedding(20, 8)(ids)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(ids, keras.layers.Dense(3, activation="softmax")(x))


def test_int8_keeps_integer_inputs_and_matches(tmp_path):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 20, (16, 6)).astype(np.int32)
    report = export.export_model(token_model(), str(tmp_path / "tokens"), input_names=["ids"],
                                 output_names=["probabilities"], sample_inputs={"ids": ids},
                                 representative_data=[ids[:8], {"ids": ids[8:]}], log=pytest.fail)
    assert set(report["tflite"]) == {"float", "dynamic", "int8"}  # log=pytest.fail: int8 was not skipped
    runner = export.tflite_signature_runner(report["tflite"]["int8"])
    assert runner.get_input_details()["ids"]["dtype"] == np.int32
    assert report["max_abs_diff"]["float"] < 1e-6 and report["max_abs_diff"]["int8"] < 0.05
    # The SavedModel's own outputs on the sample come back for callers' Keras comparisons.
    np.testing.assert_allclose(report["saved_model_outputs"]["probabilities"],
                               export.run_saved_model(report["saved_model"], {"ids": ids})["probabilities"])


def test_a_custom_check_sees_each_file_and_its_problem_fails_the_export(tmp_path):
    keras.utils.set_random_seed(0)
    ids = np.random.default_rng(1).integers(0, 20, (4, 6)).astype(np.int32)
    seen = []

    def argmax_only(kind, reference, candidate):
        same = bool(np.array_equal(reference["probabilities"].argmax(-1), candidate["probabilities"].argmax(-1)))
        seen.append(kind)
        return {"same_argmax": same}, None if same else "in its argmax"

    report = export.export_model(
        token_model(),
        str(tmp_path / "a"),
        input_names=["ids"],
        output_names=["probabilities"],
        sample_inputs={"ids": ids},
        kinds=("float",),
        check=argmax_only,
        class_names=["x", "y", "z"],
        extra_files={"notes/config.json": "{}"},
    )
    assert seen == ["float"] and report["parity"] == {"float": {"same_argmax": True}}
    assert report["max_abs_diff"] == {}  # this check measured no absolute difference
    with open(os.path.join(report["saved_model"], "assets.extra", "labels.txt")) as f:
        assert f.read() == "x\ny\nz\n"
    assert os.path.isfile(os.path.join(report["saved_model"], "notes", "config.json"))

    def always_wrong(kind, reference, candidate):
        return {}, "on purpose"

    with pytest.raises(export.ParityError, match=r"float\.tflite differs from the SavedModel on purpose"):
        export.export_model(
            token_model(),
            str(tmp_path / "b"),
            input_names=["ids"],
            output_names=["probabilities"],
            sample_inputs={"ids": ids},
            kinds=("float",),
            check=always_wrong,
        )
