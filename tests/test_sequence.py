"""apps.sequence: fortunes data, decoders, character language model (real fortunes, real TF)."""

import math
import os

import numpy as np
import pytest

from apps.sequence import charlm, data, decoding
from apps.sequence.__main__ import main
from apps.sequence.config import CharLMConfig
from apps.sequence.models import char_lm


def test_fortunes_split_is_fixed_disjoint_and_independent_of_categories():
    a = data.load_fortunes()
    b = data.load_fortunes(list(reversed(data.CLASS_CATEGORIES)))
    assert len(a.train) > 2000 and len(a.val) > 200 and len(a.test) > 200
    train, val, test = set(a.texts("train")), set(a.texts("val")), set(a.texts("test"))
    assert not (train & val or train & test or val & test)
    assert set(b.texts("test")) == test  # the split is decided by the text, not by order or label
    assert all("\x08" not in t for t in a.texts("train"))  # overstrike removed
    assert set(a.labels("train")) == set(range(len(data.CLASS_CATEGORIES)))


# A toy autoregressive model over tokens {0: end, 1, 2, 3}: a table of next-token logits
# by previous token, chosen so that greedy decoding is not the most probable sequence.
TABLE = np.log(np.array([
    [0.97, 0.01, 0.01, 0.01],   # after 0
    [0.10, 0.05, 0.45, 0.40],   # after 1
    [0.34, 0.33, 0.33, 0.00],   # after 2: flat
    [0.02, 0.02, 0.01, 0.95],   # after 3: sure
]) + 1e-12)
FIRST = np.log(np.array([0.01, 0.55, 0.04, 0.40]))


def toy_step(tokens, states):
    return TABLE[np.asarray(tokens)], [np.concatenate([states[0], np.asarray(tokens)[:, None]], axis=1)]


def sequence_logprob(tokens, length):
    logp, prev, first = 0.0, None, True
    for t in tokens[:length]:
        logp += (FIRST if first else TABLE[prev])[t]
        prev, first = t, False
    return logp


def test_toy_decoders_greedy_beam_and_temperature():
    states = [np.zeros((1, 0), np.int64)]
    greedy = decoding.greedy(toy_step, FIRST, states, 3)
    assert greedy == [1, 2, 0]
    assert decoding.beam_search(toy_step, FIRST, states, 3, width=1) == greedy
    beam = decoding.beam_search(toy_step, FIRST, states, 3, width=3)
    assert beam == [3, 3, 3] and sequence_logprob(beam, 3) > sequence_logprob(greedy, 3)
    ranked = decoding.beam_search(toy_step, FIRST, states, 3, width=3, return_all=True)
    assert [s for _, s in ranked] == sorted([s for _, s in ranked], reverse=True)
    for seed in range(5):
        assert decoding.sample(toy_step, FIRST, states, 3, temperature=1e-4, seed=seed) == greedy
    hot = {tuple(decoding.sample(toy_step, FIRST, states, 3, temperature=5.0, seed=s)) for s in range(20)}
    assert len(hot) > 5  # high temperature spreads the samples
    # end token: greedy and beam stop before it and leave it out
    assert decoding.greedy(toy_step, np.log([0.9, 0.05, 0.03, 0.02]), states, 5, end_token=0) == []


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("charlm"))
    history = charlm.train(CharLMConfig(cell="lstm", units=64, num_layers=1, embed_dim=32, epochs=2, batch_size=16,
                                        steps=50, learning_rate=5e-3, max_chars=100_000), run=out)
    return out, history


def test_charlm_loss_falls_well_below_unigram_entropy(lm_run):
    out, history = lm_run
    report = charlm.evaluate(out=out)
    assert report["unigram_entropy"] > 3.0
    assert report["val_cross_entropy"] < report["unigram_entropy"] - 0.4
    assert math.isclose(report["bits_per_char"], report["val_cross_entropy"] / math.log(2))
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_charlm_beam_width_one_and_cold_sampling_equal_greedy(lm_run):
    gen = charlm.Generator(lm_run[0])
    for prompt in ("The ", "Q:", "computer"):
        greedy = gen.generate(prompt, length=30)
        assert len(greedy) == 30
        assert gen.generate(prompt, length=30, method="beam", width=1) == greedy
        assert gen.generate(prompt, length=30, method="sample", temperature=1e-4, seed=3) == greedy


def test_loop_period_finds_the_cycle_of_a_looping_continuation():
    assert charlm.loop_period("Once upon a time," + " the prow" * 20) == len(" the prow")
    assert charlm.loop_period("x" * 99) is None  # shorter than the tail looked at
    letters = np.random.default_rng(0).integers(97, 123, size=300)
    assert charlm.loop_period("".join(map(chr, letters))) is None


def test_predict_samples_by_default_and_says_when_greedy_loops(lm_run, capsys):
    """The CLI's default decoding is sampling (T = 0.8): 200 characters without a cycle, where greedy decoding of
    the same model repeats itself and the CLI says so."""
    def predict_output(*argv):
        main(["predict", "--task", "charlm", *argv])
        return capsys.readouterr().out

    sampled = predict_output("The ", "--run", lm_run[0])
    assert charlm.loop_period(sampled.rstrip("\n")) is None and "loop" not in sampled, sampled
    greedy = charlm.Generator(lm_run[0]).generate("The ", length=200)
    period = charlm.loop_period(greedy)
    assert period, greedy
    said = predict_output("The ", "--run", lm_run[0], "--method", "greedy")
    assert said.startswith("The " + greedy) and f"repeats every {period} characters" in said


def test_tbptt_windows_continue_and_stateful_rnn_carries_state(lm_run):
    ids = np.arange(1000, dtype=np.int32)
    x, y = charlm.tbptt_windows(ids, batch_size=4, steps=10)
    assert x.shape == (24, 4, 10)
    assert (y[:-1, :, -1] == x[1:, :, 0]).all()  # window k+1 continues window k in every stream
    assert (y == x + 1).all()
    # A stateful model fed two consecutive windows gives the logits of one pass over both.
    gen = charlm.Generator(lm_run[0])
    cfg = gen.config
    stateful = char_lm(len(gen.vocab), cell="lstm", units=cfg["units"], num_layers=1, embed_dim=cfg["embed_dim"],
                       batch_size=2, stateful=True)
    stateful.set_weights(gen.model.get_weights())
    text = charlm.encode("Here is a quote long enough to be cut in two windows.", gen.vocab)[:40]
    batch = np.stack([text, text[::-1]])
    first, second = stateful(batch[:, :20]), stateful(batch[:, 20:])
    whole = gen._call([batch] + gen.zero_states(2))[0].numpy()
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), whole, atol=1e-4)


@pytest.mark.parametrize("suite_cell,keras_cell", [("elman", "keras-elman"), ("lstm", "keras-lstm"),
                                                    ("gru", "keras-gru")])
def test_suite_and_keras_cells_are_interchangeable(suite_cell, keras_cell):
    ids = np.random.default_rng(0).integers(0, 20, size=(2, 7)).astype(np.int32)
    a = char_lm(20, cell=suite_cell, units=8, num_layers=2, embed_dim=4)
    b = char_lm(20, cell=keras_cell, units=8, num_layers=2, embed_dim=4)
    b.set_weights(a.get_weights())
    np.testing.assert_allclose(a(ids), b(ids), atol=1e-5)


def test_greedy_parity_allows_only_what_float_rounding_can_decide():
    """A converted decoder may pick another token only where the reference's two best logits are within
    twice the tolerance; after that the two runs decode different prefixes and are not compared."""
    gaps = [1.0, 1e-6, 1.0]
    assert decoding.greedy_agreement([3, 1, 2], [3, 1, 2], gaps, 1e-4) == (1, None)  # stops at the tie
    assert decoding.greedy_agreement([3, 1, 2], [3, 2, 0], gaps, 1e-4) == (1, None)
    assert decoding.greedy_agreement([3, 1, 2], [0, 1, 2], gaps, 1e-4)[1].startswith("token 0 is 0, not 3")
    logits = np.zeros((2, 3, 4), np.float32)
    logits[:, :, 1] = 5.0  # token 1 wins every step by 5
    logits[1, 1, 2] = 5.0 - 1e-6  # row 1, step 1: a near tie
    tokens = np.array([[1, 1, 1], [1, 1, 1]], np.int32)
    check = decoding.greedy_tokens_check(end_token=0)
    near_tie = {"tokens": np.array([[1, 1, 1], [1, 2, 3]], np.int32), "logits": logits.copy()}
    assert check("float", {"tokens": tokens, "logits": logits}, near_tie)[1] is None
    wrong = {"tokens": np.array([[1, 2, 1], [1, 1, 1]], np.int32), "logits": logits}
    assert "greedy tokens (row 0: token 1" in check("float", {"tokens": tokens, "logits": logits}, wrong)[1]
    drifted = {"tokens": tokens, "logits": logits + 1e-3}  # tolerance 1e-4 * (1 + 5)
    assert "in its logits by 0.001" in check("float", {"tokens": tokens, "logits": logits}, drifted)[1]
    assert check("dynamic", {"tokens": tokens, "logits": logits}, drifted)[1] is None  # measured only


def test_charlm_exports_string_saved_model_and_tflite_with_parity(lm_run, tmp_path):
    from core import export

    report = charlm.export_run(out=lm_run[0], export_dir=str(tmp_path), length=20, prompts=("The", "Why"),
                               kinds=("float",))
    app_dir = tmp_path / "sequence_charlm"
    assert sorted(os.listdir(app_dir)) == ["1", "tflite"]  # one version folder, whole
    for folder in (report["saved_model"], report["tflite_source"]):
        assert os.path.isfile(os.path.join(folder, export.INPUT_SPEC)), folder
    assert export.read_sample_inputs(report["saved_model"])["prompt"].tolist() == ["The", "Why"]
    served = export.run_saved_model(report["saved_model"], {"prompt": np.array(["Why"], dtype=object)})["text"]
    assert served[0].decode() == charlm.generate("Why", out=lm_run[0], length=20)
    # The TFLite step against its SavedModel on the recorded states: float32 rounding of the logits' scale.
    samples = export.read_sample_inputs(report["tflite_source"])
    reference = export.run_saved_model(report["tflite_source"], samples)
    lite = export.run_tflite(report["tflite"]["float"], samples)
    scale = 1.0 + max(float(np.abs(v).max()) for v in reference.values())
    assert export.max_abs_difference(reference, lite) <= decoding.FLOAT_RELATIVE * scale
    assert report["same_characters"]["float"] > 0
    assert os.path.isfile(report["tflite"]["int8"])  # calibrated on the step's inputs along Keras' greedy text
    assert report["max_abs_diff"]["int8"] <= export.TOLERANCES["int8"] * scale
