"""The data of the captioning task (apps/sequence/captioning.py): scenes, their captions, the word ids.

The multi-object scenes of `core.scenes` (real Fashion-MNIST items on a dark canvas with clutter) holding one
or two objects; the caption is written from the classes and box centres (`caption_of`):
  one object   "a trouser"
  two objects  "a sneaker left of a bag"  (centres further apart in x than in y)
               "a bag above a dress"      (further apart in y)
The left (or upper) item is always named first, so every scene has exactly one right caption ("a bag right
of a sneaker" is never written). Words are vectorized with a word-level `TextVectorization` adapted on the
training captions, wrapped in <s> ... </s>. `caption_scores` grades generated captions against them.
"""

import dataclasses
import re

import numpy as np
import tensorflow as tf
from keras import layers

from core import scenes
from core.errors import UserError

START_WORD, END_WORD = "<s>", "</s>"
CAPTION_LENGTH = 7            # the longest caption, "a sneaker left of a bag", plus </s>
RELATIONS = ("left of", "above")
MAX_OBJECTS = 2               # the caption grammar names at most two items
# One word per class, so a class is one token ("T-shirt/top" would not survive word splitting).
CLASS_WORDS = {
    "fashion_mnist": ("top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"),
    "mnist5k": ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
}
CAPTION_PATTERN = re.compile(r"a (\w+)(?: (left of|above) a (\w+))?")


# ----------------------------------------------------------------- captions
def caption_of(classes, boxes, num_objects, words):
    """The caption of one scene from its item classes, pixel boxes [x_min, y_min, x_max, y_max]
    and the class words."""
    if num_objects == 1:
        return f"a {words[classes[0]]}"
    if num_objects != 2:
        raise ValueError(f"captions name one or two items, got a scene with {num_objects}")
    centres = [((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in boxes[:2]]
    dx, dy = centres[1][0] - centres[0][0], centres[1][1] - centres[0][1]
    if abs(dx) >= abs(dy):
        first, second = (0, 1) if dx >= 0 else (1, 0)
        relation = "left of"
    else:
        first, second = (0, 1) if dy >= 0 else (1, 0)
        relation = "above"
    return f"a {words[classes[first]]} {relation} a {words[classes[second]]}"


def slots(caption):
    """(item names as a sorted tuple, relation or 'none') of a caption; (None, None) if it is not one
    of the grammar's captions."""
    match = CAPTION_PATTERN.fullmatch(caption)
    if not match:
        return None, None
    first, relation, second = match.groups()
    return tuple(sorted(n for n in (first, second) if n)), relation or "none"


def caption_scores(predictions, references):
    """Exact match, per-token accuracy (position by position over each reference's words and
    </s>), and per-slot accuracy: the item names right (either order), the relation right."""
    exact = correct_tokens = total_tokens = names = relation = 0
    for predicted, reference in zip(predictions, references):
        p, r = predicted.split() + [END_WORD], reference.split() + [END_WORD]
        exact += predicted == reference
        correct_tokens += sum(a == b for a, b in zip(p, r))
        total_tokens += len(r)
        (p_names, p_relation), (r_names, r_relation) = slots(predicted), slots(reference)
        names += p_names == r_names
        relation += p_relation == r_relation
    n = max(len(references), 1)
    return {"exact_match": exact / n, "token_accuracy": correct_tokens / max(total_tokens, 1),
            "names_accuracy": names / n, "relation_accuracy": relation / n}


# --------------------------------------------------------------------- data
@dataclasses.dataclass
class CaptionedScenes:
    images: np.ndarray      # (N, S, S, 1) uint8
    captions: list          # N strings


def _captioned(images, classes, boxes, counts, words, max_objects):
    keep = [i for i, n in enumerate(counts) if 1 <= n <= max_objects]
    captions = [caption_of(classes[i], boxes[i], int(counts[i]), words) for i in keep]
    return CaptionedScenes(images[keep], captions)


def mirrored(data):
    """The scenes flipped left-right with their captions rewritten: the item that was on the right is now on the
    left and is named first ("a bag left of a coat" -> "a coat left of a bag"); one item and "above" keep their
    caption. Training on both doubles the scenes a small split offers without inventing new items."""
    def mirror(caption):
        match = CAPTION_PATTERN.fullmatch(caption)
        first, relation, second = match.groups()
        return f"a {second} left of a {first}" if relation == "left of" else caption

    return CaptionedScenes(data.images[:, :, ::-1], [mirror(c) for c in data.captions])


def _check_max_objects(max_objects):
    if not 1 <= max_objects <= MAX_OBJECTS:
        raise UserError(f"captions name one or two items: --max-objects must be 1 or 2, got {max_objects}")


def load_split(split, *, scenes_config="fashion_mnist_96", data_dir=None, spec=None, max_objects=2, limit=None):
    """Captioned scenes of a split with at most `max_objects` items: from the tfds dataset
    `generated_scenes/<scenes_config>` (built on first use), or generated in memory from a
    `core.scenes.SceneSpec` `spec` (quick runs, tests)."""
    _check_max_objects(max_objects)
    if split not in scenes.SPLITS:
        raise UserError(f"unknown split '{split}'; choose one of {', '.join(scenes.SPLITS)}")
    if spec is not None:
        arrays = scenes.generate(spec, split, count=limit)
        words = CLASS_WORDS[spec.source]
        result = _captioned(arrays["image"], arrays["classes"], arrays["boxes"], arrays["num_objects"], words,
                            max_objects)
    else:
        import tensorflow_datasets as tfds

        if scenes_config not in _tfds_configs():
            raise UserError(f"unknown scene dataset '{scenes_config}'; choose one of {', '.join(_tfds_configs())}")
        size, words = scenes.spec_of(scenes_config).size, CLASS_WORDS[scenes.spec_of(scenes_config).source]
        images, captions = [], []
        for example in tfds.as_numpy(scenes.load(split, scenes_config, data_dir)):
            labels, bbox = example["objects"]["label"], example["objects"]["bbox"]
            if not 1 <= len(labels) <= max_objects:
                continue
            y0, x0, y1, x1 = (bbox * size).T  # tfds boxes are normalized [y_min, x_min, y_max, x_max]
            pixel_boxes = np.stack([x0, y0, x1, y1], axis=-1)
            images.append(example["image"])
            captions.append(caption_of(labels, pixel_boxes, len(labels), words))
            if limit and len(images) == limit:
                break
        result = CaptionedScenes(np.stack(images), captions)
    if limit:
        result = CaptionedScenes(result.images[:limit], result.captions[:limit])
    return result


def _tfds_configs():
    return [c.name for c in scenes.tfds_builder().BUILDER_CONFIGS]


def make_vectorizer(vocab):
    """Word-level TextVectorization with a fixed vocabulary: <s> caption </s> -> CAPTION_LENGTH + 1 ids."""
    vectorizer = layers.TextVectorization(standardize=None, split="whitespace", output_mode="int",
                                          output_sequence_length=CAPTION_LENGTH + 1, vocabulary=vocab[2:],
                                          name="caption_vectorizer")
    return vectorizer


def adapt_vocabulary(captions):
    vectorizer = layers.TextVectorization(standardize=None, split="whitespace", output_mode="int")
    vectorizer.adapt(tf.data.Dataset.from_tensor_slices(wrap(captions)).batch(256))
    return vectorizer.get_vocabulary()


def wrap(captions):
    return [f"{START_WORD} {c} {END_WORD}" for c in captions]


def teacher_forcing_arrays(vectorizer, captions):
    """(decoder input, target, weight) arrays: input = <s> w1 .. wn, target = w1 .. wn </s>,
    weight 0 at padding so the loss and the token accuracy count real words only."""
    ids = vectorizer(tf.constant(wrap(captions))).numpy().astype(np.int32)
    targets = ids[:, 1:]
    return ids[:, :-1], targets, (targets != 0).astype(np.float32)
