"""apps.sequence text classification: learning, masking, string export and TFLite parity (real fortunes)."""

import json
import os

import numpy as np
import pytest

from apps.sequence import textclass
from apps.sequence.config import TextClassConfig
from apps.sequence.models import MaskedMax, build_classifier


@pytest.fixture(scope="module")
def bag_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("bag"))
    textclass.train(TextClassConfig(model="bag", epochs=4, batch_size=32, learning_rate=5e-3, sequence_length=64),
                    run=out)
    return out


def test_bag_of_embeddings_beats_majority_class(bag_run):
    report = textclass.evaluate(out=bag_run)
    assert report["majority_class"] == "computers"
    assert report["accuracy"] > report["majority_accuracy"] + 0.1
    assert report["macro_f1"] > report["majority_macro_f1"] + 0.2


@pytest.mark.parametrize("name", ["bag", "lstm", "bigru", "transformer"])
def test_masking_hides_padding(name):
    """The same words padded to 12 or to 30 positions give the same probabilities."""
    short = build_classifier(name, 50, 3, 12)
    long = build_classifier(name, 50, 3, 30)
    long.set_weights(short.get_weights())
    words = np.random.default_rng(1).integers(2, 50, size=(3, 9))
    a = np.zeros((3, 12), np.int32)
    b = np.zeros((3, 30), np.int32)
    a[:, :9] = b[:, :9] = words
    a[0, 5:] = b[0, 5:] = 0  # a shorter quote in the batch
    np.testing.assert_allclose(short(a), long(b), atol=1e-5)


def test_masked_max_is_the_maximum_over_the_real_words():
    features = np.random.default_rng(2).normal(size=(3, 5, 4)).astype(np.float32) - 3.0  # all below the padding's 0
    mask = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], bool)
    pooled = np.asarray(MaskedMax()(features, mask=mask))
    np.testing.assert_array_equal(pooled[0], features[0, :2].max(axis=0))
    np.testing.assert_array_equal(pooled[1], features[1].max(axis=0))
    np.testing.assert_array_equal(pooled[2], 0.0)  # a quote without words


def test_string_saved_model_and_tflite_parity(bag_run, tmp_path):
    from core import export

    report = textclass.export_run(out=bag_run, export_dir=str(tmp_path))
    assert set(report["tflite"]) == {"float", "dynamic", "int8"} and report["max_abs_diff"]["float"] < 1e-4
    assert report["max_abs_diff"]["int8"] <= export.TOLERANCES["int8"]  # int32 word ids, calibrated as int32
    assert sorted(os.listdir(tmp_path / "sequence_textclass_bag")) == ["1", "tflite"]  # one version folder, whole
    assert export.read_labels(report["saved_model"]) == json.load(open(f"{bag_run}/config.json"))["class_names"]
    quotes = ["The program crashed and the compiler dumped core.", "Captain's log, stardate 4523.3"]
    served = export.run_saved_model(report["string_saved_model"], {"text": np.array(quotes, dtype=object)})
    assert [n.decode() for n in served["class_name"]] == textclass.predict(quotes, out=bag_run)
    np.testing.assert_allclose(served["probabilities"].sum(axis=1), 1.0, atol=1e-5)


def test_lstm_classifier_converts_to_builtin_tflite(tmp_path):
    from core import export

    out = str(tmp_path / "lstm")
    textclass.train(TextClassConfig(model="lstm", epochs=1, sequence_length=16, limit=300), run=out)
    report = textclass.export_run(out=out, export_dir=str(tmp_path / "exports"))
    assert report["max_abs_diff"]["float"] < 1e-4  # export_model raises on a parity failure
    assert report["max_abs_diff"]["int8"] <= export.TOLERANCES["int8"]
