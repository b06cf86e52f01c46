"""apps.sequence image captioning: captions from boxes, learning beyond the most frequent caption,
attention, beam = greedy, SavedModel parity, CLI errors (real scenes, real TF)."""

import os

import numpy as np
import pytest

from apps.sequence import caption_data, captioning, decoding
from apps.sequence.__main__ import main
from apps.sequence.config import CaptionConfig
from core import scenes
from core.errors import UserError

WORDS = caption_data.CLASS_WORDS["fashion_mnist"]  # 7 = sneaker, 8 = bag, 3 = dress, 1 = trouser
SPEC = scenes.SceneSpec(size=48, min_objects=1, max_objects=2, min_scale=0.8, max_scale=1.2, max_iou=0.1, clutter=2,
                        train=800, validation=200, test=200)


def test_captions_are_written_from_classes_and_box_centres():
    one = caption_data.caption_of([1, -1], np.array([[5, 5, 20, 30], [0, 0, 0, 0]]), 1, WORDS)
    assert one == "a trouser"
    left, right = [2, 10, 22, 30], [40, 14, 60, 34]  # centres (12, 20) and (50, 24): apart in x
    assert caption_data.caption_of([7, 8], np.array([left, right]), 2, WORDS) == "a sneaker left of a bag"
    assert caption_data.caption_of([8, 7], np.array([right, left]), 2, WORDS) == "a sneaker left of a bag"
    top, bottom = [30, 0, 50, 20], [20, 50, 44, 80]  # centres (40, 10) and (32, 65): apart in y
    assert caption_data.caption_of([3, 8], np.array([bottom, top]), 2, WORDS) == "a bag above a dress"
    with pytest.raises(ValueError, match="one or two items"):
        caption_data.caption_of([1, 2, 3], np.zeros((3, 4)), 3, WORDS)
    assert caption_data.slots("a bag above a dress") == (("bag", "dress"), "above")
    assert caption_data.slots("a trouser") == (("trouser",), "none")
    assert caption_data.slots("a a left") == (None, None)


def test_caption_scores_count_tokens_and_slots():
    references = ["a sneaker left of a bag", "a trouser", "a bag above a dress", "a coat"]
    predictions = ["a bag left of a sneaker", "a trouser", "a bag above a coat", "a coat left of a bag"]
    scores = caption_data.caption_scores(predictions, references)
    # position by position over words + </s>: 5 of 7 (swapped names), 3 of 3, 5 of 6, 2 of 3
    assert scores["token_accuracy"] == pytest.approx(15 / 19)
    assert scores["exact_match"] == 0.25
    assert scores["names_accuracy"] == 0.5     # the swapped names count, a wrong name does not
    assert scores["relation_accuracy"] == 0.75  # "left of" where there is one item is wrong


def test_generated_scene_captions_follow_the_boxes():
    data = caption_data.load_split("validation", spec=SPEC, limit=60)
    arrays = scenes.generate(SPEC, "validation", count=60)
    assert len(data.captions) == 60 and data.images.shape == (60, 48, 48, 1) and data.images.dtype == np.uint8
    for i, caption in enumerate(data.captions):
        n = int(arrays["num_objects"][i])
        names, relation = caption_data.slots(caption)
        assert names == tuple(sorted(WORDS[c] for c in arrays["classes"][i, :n]))
        if n == 2:
            (x0, y0), (x1, y1) = [((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in arrays["boxes"][i, :2]]
            assert relation == ("left of" if abs(x1 - x0) >= abs(y1 - y0) else "above")
        else:
            assert relation == "none"
    assert {"left of", "above", "none"} <= {caption_data.slots(c)[1] for c in data.captions}


def test_mirrored_scenes_carry_the_captions_of_their_flipped_boxes():
    arrays = scenes.generate(SPEC, "train", count=80)
    data = caption_data.load_split("train", spec=SPEC, limit=80)
    mirror = caption_data.mirrored(data)
    np.testing.assert_array_equal(mirror.images, data.images[:, :, ::-1])
    size = SPEC.size
    changed = 0
    for i, (caption, mirrored) in enumerate(zip(data.captions, mirror.captions)):
        boxes = arrays["boxes"][i].astype(float)
        flipped = np.stack([size - boxes[:, 2], boxes[:, 1], size - boxes[:, 0], boxes[:, 3]], axis=-1)
        n = int(arrays["num_objects"][i])
        assert mirrored == caption_data.caption_of(arrays["classes"][i], flipped, n, WORDS)
        changed += mirrored != caption
    assert changed >= 10  # two different items side by side swap their names


@pytest.fixture(scope="module")
def caption_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("caption"))
    history = captioning.train(CaptionConfig(epochs=5, batch_size=32, learning_rate=3e-3), run=out, spec=SPEC,
                               sizes=dict(units=48, embed_dim=16, filters=(16, 32, 48)))
    return out, history


def test_short_training_beats_the_most_frequent_caption(caption_run):
    out, history = caption_run
    accuracy = history.history["val_accuracy"]  # teacher-forced, real tokens only
    assert accuracy[-1] > accuracy[0] + 0.1
    report = captioning.evaluate(out=out, limit=200)
    baseline = report["baseline"]
    assert report["token_accuracy"] > baseline["token_accuracy"] + 0.15
    assert report["names_accuracy"] > baseline["names_accuracy"] + 0.1
    assert report["exact_match"] > baseline["exact_match"]
    assert report["attention_png"].endswith("captions.png")


def test_attention_sums_to_one_and_beam_width_one_is_greedy(caption_run):
    model = captioning.CaptionModel(caption_run[0])
    images = model.load_split("test", limit=6).images
    states = model.net.step_states(images)
    _, _, weights = model.net.step(np.full(6, model.start, np.int32), states, with_attention=True)
    h, w = model.net.grid
    assert weights.shape == (6, h * w) and (weights >= 0).all()
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    batch = model.greedy_batch(images)
    for image, greedy in zip(images, batch):
        assert model.caption(image, width=1) == greedy
        logits, states = model.first_logits(image[None])
        beam = decoding.beam_search(model.net.step, logits[0], states, caption_data.CAPTION_LENGTH, width=1,
                                    end_token=model.end)
        assert model.words(beam) == greedy
    words, maps = model.attention(images[0])
    assert " ".join(words[:-1] if words[-1] == caption_data.END_WORD else words) == batch[0]
    assert all(m.shape == (h, w) for m in maps)


def test_saved_model_and_tflite_captions_equal_python_greedy(caption_run, tmp_path):
    from apps.sequence import exports
    from core import export

    # raises on a parity failure: served captions vs Keras, TFLite tokens and logits vs their SavedModel
    report = captioning.export_run(out=caption_run[0], export_dir=str(tmp_path), kinds=("float",))
    model = captioning.CaptionModel(caption_run[0])
    images = model.load_split("validation", limit=5).images
    served = export.run_saved_model(report["saved_model"], {"image": images})["caption"]
    assert [c.decode() for c in served] == [model.caption(image) for image in images]
    assert len(set(report["captions"])) > 1  # not one caption for everything
    assert sorted(os.listdir(tmp_path / "sequence_caption")) == ["1", "tflite"]
    for folder in (report["saved_model"], report["tflite_source"]):
        assert os.path.isfile(os.path.join(folder, export.INPUT_SPEC)), folder
    # The device file: uint8 images in, greedy word ids out, Keras' captions wherever no step is a near tie.
    reference = export.run_saved_model(report["tflite_source"], {"image": images})
    lite = export.run_tflite(report["tflite"]["float"], {"image": images})
    assert decoding.greedy_tokens_check(model.end)("float", reference, lite)[1] is None
    tolerance = decoding.FLOAT_RELATIVE * (1.0 + np.abs(reference["logits"]).max())
    undecided = exports.undecided_rows(reference["logits"], reference["tokens"], model.end, tolerance)
    for row, caption, tie in zip(lite["tokens"], model.greedy_batch(images), undecided):
        assert tie or model.words(row[:list(row).index(model.end)] if model.end in row else row) == caption
    assert not undecided.all()


@pytest.mark.parametrize("argv,message", [
    (["evaluate", "--task", "caption", "--run", "/nonexistent/run"], "no training run in /nonexistent/run"),
    (["train", "--task", "caption", "--max-objects", "3"], "--max-objects must be at most 2"),
    (["train", "--task", "caption", "--epochs", "0", "--run", "{tmp}/run"], "--epochs must be at least 1"),
    (["train", "--task", "caption", "--scenes", "imagenet", "--run", "{tmp}/run"], "unknown scene dataset 'imagenet'"),
    (["predict", "--task", "caption", "--saved-model", "/nonexistent/model", "a.png"], "SavedModel folder not found"),
])
def test_cli_errors_are_one_line(argv, message, tmp_path):
    with pytest.raises(UserError, match=message) as error:
        main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert "\n" not in str(error.value)


def test_cli_predict_rejects_missing_and_broken_images(caption_run, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_text("not a picture")
    with pytest.raises(UserError, match="image not found"):
        main(["predict", "--task", "caption", str(tmp_path / "missing.png"), "--run", caption_run[0]])
    with pytest.raises(UserError, match="cannot read the image"):
        main(["predict", "--task", "caption", str(broken), "--run", caption_run[0]])
    with pytest.raises(UserError, match="--width must be at least 1"):
        main(["predict", "--task", "caption", "--width", "0", "--run", caption_run[0]])
