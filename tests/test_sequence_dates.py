"""apps.sequence date normalisation: Babel data, Bahdanau attention seq2seq, Transformer masking, export."""

import datetime
import os
import re
from collections import Counter

import numpy as np
import pytest

from apps.sequence import data, decoding, seq2seq
from apps.sequence.config import DatesConfig


def test_dates_are_real_varied_and_reproducible():
    pairs = data.make_dates(400, seed=7)
    assert pairs == data.make_dates(400, seed=7)
    for text, iso in pairs:
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", iso)
        date = datetime.date.fromisoformat(iso)
        assert data.DATE_START <= date <= data.DATE_END
        assert str(date.year) in text or f"{date.year % 100:02d}" in text
    texts = " ".join(t for t, _ in pairs).lower()
    for month_word in ("march", "märz", "mars", "marzo", "maart", "marca"):
        assert month_word in texts or month_word[:3] in texts
    assert len({re.sub(r"\d", "9", t) for t, _ in pairs}) > 60  # many distinct surface forms


@pytest.fixture(scope="module")
def bahdanau_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("bahdanau"))
    config = DatesConfig(model="bahdanau", epochs=3, batch_size=64, learning_rate=5e-3, train_size=1500,
                         val_size=200, test_size=100)
    history = seq2seq.train(config, run=out, sizes={"units": 48, "embed_dim": 16})
    return out, history


def test_bahdanau_accuracy_rises(bahdanau_run):
    out, history = bahdanau_run
    accuracy = history.history["val_accuracy"]
    assert accuracy[-1] > accuracy[0] + 0.05
    assert accuracy[-1] > 0.3  # per-symbol accuracy; 13 symbols
    report = seq2seq.evaluate(out=out, limit=100)
    assert report["attention_png"].endswith(".png") and report["num_examples"] == 100
    train_pairs, _, test_pairs = data.date_splits(1500, 200, 100, seed=0)  # the fixture's splits
    isos = [iso for _, iso in test_pairs]
    predictions = seq2seq.Normalizer(out).normalize_batch([text for text, _ in test_pairs])
    assert report["exact_match"] == np.mean([p == iso for p, iso in zip(predictions, isos)])

    def characters_right(guesses):  # the share of the 10 ISO characters right, position by position
        return np.mean([sum(g == c for g, c in zip(guess, iso)) / 10 for guess, iso in zip(guesses, isos)])

    # The baseline knows the format: the most frequent training character at each position (about
    # "1920-01-11"): about 45% of the characters and no whole date right. Free-running greedy decoding
    # after 3 epochs gets ~80% of the characters and a few dates (7 of 100 here) entirely right.
    baseline = "".join(Counter(column).most_common(1)[0][0] for column in zip(*(iso for _, iso in train_pairs)))
    assert characters_right(predictions) > characters_right([baseline] * len(isos)) + 0.2
    assert report["exact_match"] > max(np.mean([baseline == iso for iso in isos]), 0.01)


def test_attention_weights_sum_to_one_and_beam_one_is_greedy(bahdanau_run):
    normalizer = seq2seq.Normalizer(bahdanau_run[0])
    texts = ["4 mars 2021", "Thursday, March 4, 2021", "04.03.21"]
    ids = normalizer.ids(texts)
    states = normalizer.net.step_states(ids)
    _, _, weights = normalizer.net.step(np.full(3, seq2seq.START, np.int32), states, with_attention=True)
    assert weights.shape == (3, seq2seq.MAX_INPUT)
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, atol=1e-5)
    assert (weights >= 0).all()
    for row, text in zip(ids, texts):
        logits, states = seq2seq.first_logits(normalizer.net, row[None])
        greedy = decoding.greedy(normalizer.net.step, logits[0], states, seq2seq.TARGET_LENGTH, end_token=seq2seq.END)
        beam = decoding.beam_search(normalizer.net.step, logits[0], states, seq2seq.TARGET_LENGTH, width=1,
                                    end_token=seq2seq.END)
        assert beam == greedy
        assert normalizer.normalize(text) == seq2seq.decode_targets(greedy)
    assert normalizer.normalize_batch(texts) == [normalizer.normalize(t) for t in texts]


def test_bahdanau_string_export_and_tflite_parity(bahdanau_run, tmp_path):
    from apps.sequence import exports
    from core import export

    # raises on a parity failure: served text vs Keras, TFLite tokens and logits vs their SavedModel
    report = seq2seq.export_run(out=bahdanau_run[0], export_dir=str(tmp_path), kinds=("float",))
    normalizer = seq2seq.Normalizer(bahdanau_run[0])
    out = export.run_saved_model(report["saved_model"], {"text": np.array(["4 mars 2021"], dtype=object)})
    assert out["iso"][0].decode() == normalizer.normalize("4 mars 2021")
    assert sorted(os.listdir(tmp_path / "sequence_dates_bahdanau")) == ["1", "tflite"]
    for folder in (report["saved_model"], report["tflite_source"]):
        assert os.path.isfile(os.path.join(folder, export.INPUT_SPEC)), folder
    # The device file on the recorded inputs: source ids in, greedy tokens out, the same dates as Keras.
    texts = export.read_sample_inputs(report["saved_model"])["text"].tolist()
    source = export.read_sample_inputs(report["tflite_source"])
    np.testing.assert_array_equal(source["source"], normalizer.ids(texts))
    reference = export.run_saved_model(report["tflite_source"], source)
    lite = export.run_tflite(report["tflite"]["float"], source)
    tolerance = decoding.FLOAT_RELATIVE * (1.0 + np.abs(reference["logits"]).max())
    assert decoding.greedy_tokens_check(seq2seq.END)("float", reference, lite)[1] is None
    undecided = exports.undecided_rows(reference["logits"], reference["tokens"], seq2seq.END, tolerance)
    keras_dates = normalizer.normalize_batch(texts)
    for row, date, tie in zip(lite["tokens"], keras_dates, undecided):
        assert tie or seq2seq.decode_targets(row) == date
    assert not undecided.all()


def test_transformer_decoder_is_causal_and_step_decoding_matches_full_pass():
    net = seq2seq.build("transformer", 30, d_model=16, num_heads=2, ff_dim=32, num_layers=1)
    rng = np.random.default_rng(0)
    source = rng.integers(2, 30, size=(2, seq2seq.MAX_INPUT)).astype(np.int32)
    target = rng.integers(3, len(seq2seq.TARGET_VOCAB), size=(2, 8)).astype(np.int32)
    changed = target.copy()
    changed[:, 5:] = seq2seq.END  # change the future
    a = net.model([source, target], training=False).numpy()
    b = net.model([source, changed], training=False).numpy()
    np.testing.assert_allclose(a[:, :5], b[:, :5], atol=1e-5)  # positions < 5 cannot see positions >= 5
    assert np.abs(a[:, 5:] - b[:, 5:]).max() > 1e-4
    weights = net.cross_attention(target, net.encoder(source, training=False), source)
    assert weights.shape == (2, 8, seq2seq.MAX_INPUT)
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, atol=1e-5)
    # incremental decoding (prefix states) reproduces the teacher-forced pass
    states = net.step_states(source)
    logits = []
    for t in range(target.shape[1]):
        step_logits, states = net.step(target[:, t], states)
        logits.append(step_logits)
    np.testing.assert_allclose(np.stack(logits, axis=1), a, atol=1e-4)


@pytest.mark.parametrize("model,sizes", [("bahdanau", {"units": 8, "embed_dim": 4}),
                                         ("transformer", {"d_model": 8, "num_heads": 2, "ff_dim": 16,
                                                          "num_layers": 1})])
def test_padding_has_no_effect_on_the_outputs(model, sizes):
    """The padded source positions are masked everywhere (encoder keys, attention over the memory):
    changing the padding symbol's embedding, or the memory at padded positions in the one-step
    decoder, leaves the logits and the attention on real characters unchanged."""
    net = seq2seq.build(model, 30, **sizes)
    rng = np.random.default_rng(1)
    source = np.zeros((2, seq2seq.MAX_INPUT), np.int32)
    source[0, :12] = rng.integers(2, 30, 12)
    source[1, :30] = rng.integers(2, 30, 30)
    target = rng.integers(3, len(seq2seq.TARGET_VOCAB), size=(2, 6)).astype(np.int32)
    before = net.model([source, target], training=False).numpy()
    embed = net.model.get_layer("embed_source")
    table = embed.get_weights()[0]
    table[0] = rng.normal(0, 3, size=table.shape[1])
    embed.set_weights([table])
    np.testing.assert_allclose(net.model([source, target], training=False).numpy(), before, atol=1e-5)
    states = net.step_states(source)
    junk = [s.copy() for s in states]
    junk[0][0, 12:] = rng.normal(0, 5, size=junk[0][0, 12:].shape)  # memory of row 0 past its 12 characters
    tokens = np.full(2, seq2seq.START, np.int32)
    np.testing.assert_allclose(net.step(tokens, junk)[0], net.step(tokens, states)[0], atol=1e-5)
