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


def test_a_string_signature_exports_with_the_tflite_files_of_its_numeric_model(tmp_path):
    """An `endpoint_archive` (text in, class names out) is the served SavedModel; the TFLite files are
    converted from a `TFLiteSource` (the numeric model inside it), written in the same version folder, and
    checked against it. A source that cannot be exported leaves no version folder behind."""
    import json

    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = token_model()
    lookup = keras.layers.StringLookup(vocabulary=[f"w{i}" for i in range(19)])  # 0: unknown or padding
    lookup(tf.constant(["w0"]))  # builds it (an unbuilt layer cannot be exported)
    names = tf.constant(["x", "y", "z"])

    def serve(text):
        ids = tf.cast(lookup(tf.strings.split(text).to_tensor(shape=[None, 6])), tf.int32)
        probabilities = model(ids, training=False)
        return {"class_name": tf.gather(names, tf.argmax(probabilities, axis=-1)), "probabilities": probabilities}

    texts = np.array(["w1 w2 w3", "w4 w5 w6 w7 w8 w9", "w17 w0", "w18 unknown w3"])
    ids = np.array([[2, 3, 4, 0, 0, 0], [5, 6, 7, 8, 9, 10], [18, 1, 0, 0, 0, 0], [19, 0, 4, 0, 0, 0]], np.int32)
    arguments = dict(input_names=["text"], output_names=["class_name", "probabilities"], sample_inputs={"text": texts},
                     kinds=("float",), log=pytest.fail)
    archive = export.endpoint_archive(serve, [tf.TensorSpec([None], tf.string, name="text")], [model, lookup])
    app_dir = str(tmp_path / "text")
    report = export.export_model(archive, app_dir, **arguments,
                                 tflite_from=export.TFLiteSource(model, ["ids"], ["probabilities"], {"ids": ids}))
    expected = model(ids).numpy()
    np.testing.assert_allclose(report["saved_model_outputs"]["probabilities"], expected, atol=1e-6)
    assert [n.decode() for n in report["saved_model_outputs"]["class_name"]] == [
        "xyz"[i] for i in expected.argmax(1)]
    assert report["tflite_source"] == os.path.join(report["saved_model"], "tflite_source")
    assert report["max_abs_diff"]["float"] < 1e-6  # float32 softmax probabilities, the same ops reordered
    np.testing.assert_allclose(export.run_tflite(report["tflite"]["float"], {"ids": ids})["probabilities"], expected,
                               atol=1e-6)
    # Each SavedModel records its own inputs; text is stored without pickle.
    with open(os.path.join(report["saved_model"], export.INPUT_SPEC)) as f:
        assert json.load(f)["text"]["dtype"].startswith("<U")
    assert export.read_sample_inputs(report["saved_model"])["text"].tolist() == texts.tolist()
    np.testing.assert_array_equal(export.read_sample_inputs(report["tflite_source"])["ids"], ids)

    broken = export.TFLiteSource(model, ["ids", "extra"], ["probabilities"], {"ids": ids})
    with pytest.raises(ValueError, match="1 inputs"):
        export.export_model(archive, app_dir, **arguments, tflite_from=broken)
    assert sorted(os.listdir(app_dir)) == ["1", "tflite"]  # no version 2, no temporary folder
