"""The scene generator behind segment, detect and captioning: real items, consistent labels."""

import numpy as np
import pytest

from core import scenes
from core.errors import UserError

SPEC = scenes.SceneSpec(size=64, max_objects=3, min_scale=0.8, max_scale=1.4, clutter=3)


@pytest.fixture(scope="module")
def train_scenes():
    return scenes.generate(SPEC, "train", count=64, seed=3)


def test_generation_is_deterministic_by_seed(train_scenes):
    again = scenes.generate(SPEC, "train", count=64, seed=3)
    other = scenes.generate(SPEC, "train", count=64, seed=4)
    for key in train_scenes:
        np.testing.assert_array_equal(train_scenes[key], again[key])
    assert not np.array_equal(train_scenes["image"], other["image"])


def test_shapes_and_dtypes(train_scenes):
    s = SPEC.size
    assert train_scenes["image"].shape == (64, s, s, 1) and train_scenes["image"].dtype == np.uint8
    assert train_scenes["semantic"].shape == train_scenes["instances"].shape == (64, s, s)
    assert train_scenes["boxes"].shape == (64, SPEC.max_objects, 4)
    n = train_scenes["num_objects"]
    assert n.min() >= SPEC.min_objects and n.max() <= SPEC.max_objects
    for i, count in enumerate(n):
        assert (train_scenes["classes"][i, :count] >= 0).all() and (train_scenes["classes"][i, count:] == -1).all()


def test_masks_agree_with_classes_and_boxes(train_scenes):
    for i in range(len(train_scenes["image"])):
        semantic, instances = train_scenes["semantic"][i], train_scenes["instances"][i]
        n = int(train_scenes["num_objects"][i])
        # background in one map is background in the other
        np.testing.assert_array_equal(semantic == 0, instances == 0)
        masks = scenes.instance_masks(instances, n)
        for k in range(n):
            assert masks[k].any(), "every placed object stays at least partly visible"
            # the semantic label of an instance's pixels is its class + 1
            assert (semantic[masks[k]] == train_scenes["classes"][i, k] + 1).all()
            # its visible pixels lie inside its (amodal) box
            rows, cols = np.nonzero(masks[k])
            x0, y0, x1, y1 = train_scenes["boxes"][i, k]
            assert x0 <= cols.min() and cols.max() < x1 and y0 <= rows.min() and rows.max() < y1
            # and the box is tight when nothing covers the item
            if n == 1:
                assert (x0, y0, x1, y1) == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
        # item pixels are the bright ones: objects are drawn over the dim clutter
        assert train_scenes["image"][i, ..., 0][semantic > 0].min() > scenes.FOREGROUND_THRESHOLD


def test_boxes_respect_the_overlap_limit(train_scenes):
    for i in range(len(train_scenes["image"])):
        boxes = train_scenes["boxes"][i, :train_scenes["num_objects"][i]]
        for a in range(len(boxes)):
            for b in range(a):
                assert scenes._iou(boxes[a], boxes[b]) <= SPEC.max_iou + 1e-6


def test_splits_draw_from_disjoint_items():
    train, _ = scenes.item_pool("fashion_mnist", "train")
    validation, _ = scenes.item_pool("fashion_mnist", "validation")
    test, _ = scenes.item_pool("fashion_mnist", "test")
    assert len(train) == 54000 and len(validation) == 6000 and len(test) == 10000
    as_rows = lambda a: {row.tobytes() for row in a[:500].reshape(500, -1)}
    assert not as_rows(validation) & {row.tobytes() for row in train.reshape(len(train), -1)}
    assert (
        len(as_rows(test) & {row.tobytes() for row in train.reshape(len(train), -1)}) < 5
    )  # a few duplicates exist in the dataset itself


def test_tfds_dataset_serves_the_generated_scenes(tmp_path):
    config = "fashion_mnist_64_small"
    spec = scenes.spec_of(config)
    expected = scenes.generate(spec, "validation")
    served = list(scenes.load("validation", config, data_dir=str(tmp_path)).as_numpy_iterator())
    assert len(served) == spec.validation
    for i in (0, 7, len(served) - 1):
        example, n = served[i], int(expected["num_objects"][i])
        np.testing.assert_array_equal(example["image"], expected["image"][i])
        np.testing.assert_array_equal(example["semantic"], expected["semantic"][i])
        np.testing.assert_array_equal(example["instances"], expected["instances"][i])
        np.testing.assert_array_equal(example["objects"]["label"], expected["classes"][i, :n])
        x0, y0, x1, y1 = (expected["boxes"][i, :n] / spec.size).T
        np.testing.assert_allclose(example["objects"]["bbox"], np.stack([y0, x0, y1, x1], -1), atol=1e-6)


def test_preview_png_and_errors(tmp_path, train_scenes):
    path = scenes.preview(train_scenes, str(tmp_path / "preview.png"), names=scenes.class_names("fashion_mnist"))
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(UserError, match="unknown scene source"):
        scenes.class_names("cifar")
    with pytest.raises(UserError, match="unknown scene dataset"):
        scenes.builder("nope", data_dir=str(tmp_path))
    with pytest.raises(UserError, match="unknown split"):
        scenes.load("dev", "fashion_mnist_64_small", data_dir=str(tmp_path))
