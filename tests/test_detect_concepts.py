"""The detect app's path toward detection: single-object localisation, the sliding-window detector,
selective search and classic R-CNN -- each test asserts the effect docs/detect.md describes, at a
budget of seconds (the CLI verbs `localize`, `sliding-window`, `rcnn-classic` run larger ones)."""

import os

import numpy as np
import pytest

from apps.detect import experiment, patches
from apps.detect.boxes import iou_matrix, random_boxes
from apps.detect.data import ground_truths
from apps.detect.metrics import detection_metrics
from core import export

NUM_CLASSES = len(experiment.CLASS_NAMES)


@pytest.fixture(scope="module")
def scenes():
    """Scenes with 1-3 objects (64x64): a few for training the crop classifiers, 32 for testing."""
    return experiment.make_scenes(experiment.MULTI_OBJECT, dict(train=80, test=32), seed=0)


def random_map50(test):
    from apps.detect import app

    return detection_metrics(app.random_baseline(test, NUM_CLASSES), ground_truths(test), NUM_CLASSES)["map50"]


# --- 1. one object: a class head and a box head ---------------------------------------------------------------

def test_localizer_beats_the_mean_box_and_chance_and_exports_with_parity(tmp_path):
    from apps.detect import localize

    single = experiment.make_scenes(experiment.SINGLE_OBJECT, dict(train=480, test=192), seed=0)
    model = localize.train(single, NUM_CLASSES, box_loss="giou", epochs=4, batch_size=16, seed=0)
    test = single["test"]
    probabilities, boxes = model.predict(test["image"].astype(np.float32), verbose=0)
    learned = localize.scores(probabilities.argmax(axis=1), boxes, test)
    baselines = localize.baselines(single["train"], test)
    best_baseline = max(b["mean_iou"] for b in baselines.values())
    assert best_baseline < 0.35  # the objects are anywhere: no fixed box overlaps most of them
    assert learned["mean_iou"] > best_baseline + 0.15, (learned, best_baseline)
    assert learned["iou50"] > max(b["iou50"] for b in baselines.values()) + 0.25
    assert learned["accuracy"] > 0.1 + 0.1  # 10 balanced classes: chance is 0.1

    report = localize.export_localizer(model, test["image"][:8], single["train"]["image"][:32],
                                       export_dir=str(tmp_path), kinds=("float",))
    float_parity = report["parity"]["float"]
    assert float_parity["probabilities"] <= export.TOLERANCES["float"] and float_parity["box_pixels"] < 0.01
    assert os.path.isfile(report["tflite"]["int8"])  # calibrated on training scenes, held to TOLERANCES["int8"]
    assert 0 <= report["max_abs_diff"]["int8"] <= export.TOLERANCES["int8"]
    served = report["saved_model_outputs"]
    np.testing.assert_allclose(served["box"], boxes[:8], atol=1e-3)  # pixels: float32 rounding of values <= 64
    assert export.read_labels(report["saved_model"]) == experiment.CLASS_NAMES


# --- 2. the sliding-window detector -----------------------------------------------------------------------------

def test_window_enumeration_matches_the_arithmetic():
    from apps.detect import sliding_window as sw

    # One 20x20 shape at stride 5 in 64 pixels: x0 = 0, 5, ..., 40 (floor(44 / 5) + 1 = 9) on each axis.
    windows = sw.enumerate_windows(64, [(20, 20, 5)])
    assert len(windows) == 81 and sorted(set(windows[:, 0])) == list(range(0, 41, 5))
    # The default grid, shape by shape (w, h, stride): sides 20, 28, 36 at stride side / 4, aspect 1:2, 1:1, 2:1.
    shapes = sw.window_shapes()
    assert shapes == [(28, 14, 5), (20, 20, 5), (14, 28, 5), (40, 20, 7), (28, 28, 7), (20, 40, 7),
                      (51, 25, 9), (36, 36, 9), (25, 51, 9)]
    by_hand = 8 * 11 + 9 * 9 + 11 * 8 + 4 * 7 + 6 * 6 + 7 * 4 + 2 * 5 + 4 * 4 + 5 * 2
    windows = sw.enumerate_windows(64, shapes)
    assert len(windows) == sw.expected_count(64, shapes) == by_hand == 385
    assert len(np.unique(windows, axis=0)) == 385
    assert windows.min() == 0 and windows[:, 2:].max() == 64  # inside the image, touching its far edges


def test_sliding_window_detector_finds_objects_far_above_random_boxes(scenes):
    from apps.detect import sliding_window as sw

    windows = sw.enumerate_windows(64, sw.window_shapes())
    classifier = sw.train_window_classifier(scenes["train"], windows, NUM_CLASSES, epochs=4, learning_rate=4e-3,
                                            seed=0)
    test = scenes["test"]
    found = sw.detect(classifier, test["image"].astype(np.float32), windows, NUM_CLASSES)
    window_map = detection_metrics(found, ground_truths(test), NUM_CLASSES)["map50"]
    random_map = random_map50(test)
    assert random_map < 0.03
    assert window_map > max(0.1, 5 * random_map), (window_map, random_map)


# --- 3. selective search and classic R-CNN ---------------------------------------------------------------------

def test_similarity_of_hand_made_regions():
    from apps.detect import selective_search as ss

    # A 4x8 image, left half black, right half white: one region each.
    image = np.zeros((4, 8), np.uint8)
    image[:, 4:] = 255
    (left, right), pairs = ss.initial_regions(image, (image > 0).astype(int))
    assert pairs == {(0, 1)} and left.size == right.size == 16
    np.testing.assert_array_equal(right.box, [4, 0, 8, 4])
    # colour: disjoint histograms -> 0; size: 1 - 32/32 = 0; fill: their box is the image, no gap -> 1.
    assert ss.similarity(left, right, 32.0) == pytest.approx(1.0)
    # Two 2x2 squares touching at a corner of a 4x4 image: their box leaves 8 of 16 px empty.
    a = ss.Region(4, np.array([0, 0, 2, 2]), np.array([1.0, 0.0]))
    b = ss.Region(4, np.array([2, 2, 4, 4]), np.array([0.5, 0.5]))
    assert ss.similarity(a, b, 16.0, ("colour",)) == pytest.approx(0.5)   # min(1, .5) + min(0, .5)
    assert ss.similarity(a, b, 16.0, ("size",)) == pytest.approx(0.5)     # 1 - 8/16
    assert ss.similarity(a, b, 16.0, ("fill",)) == pytest.approx(0.5)     # 1 - (16 - 8)/16
    merged = a.merged(b)
    assert merged.size == 8 and list(merged.box) == [0, 0, 4, 4]
    np.testing.assert_allclose(merged.histogram, [0.75, 0.25])           # size-weighted mean


def test_selective_search_merges_neighbours_into_one_hierarchy(scenes):
    from scipy import ndimage

    from apps.detect import selective_search as ss

    image = scenes["test"]["image"][0, ..., 0]
    labels = ss.initial_segmentation(image, 30)
    count = int(labels.max()) + 1
    regions, merges = ss.hierarchical_grouping(image, labels)
    assert count > 10 and len(merges) == count - 1 and len(regions) == 2 * count - 1
    members = {k: {k} for k in range(count)}
    active = set(range(count))
    for step, (i, j, new) in enumerate(merges):
        assert i in active and j in active and new == count + step
        mask_i, mask_j = np.isin(labels, list(members[i])), np.isin(labels, list(members[j]))
        assert (ndimage.binary_dilation(mask_i) & mask_j).any()  # only neighbours merge
        members[new] = members.pop(i) | members.pop(j)
        active = (active - {i, j}) | {new}
        assert len(active) == count - step - 1  # each merge: one region fewer
        merged = np.isin(labels, list(members[new]))
        rows, cols = np.nonzero(merged)
        assert regions[new].size == merged.sum()
        np.testing.assert_array_equal(regions[new].box, [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
    assert active == {len(regions) - 1}
    assert regions[-1].size == image.size and list(regions[-1].box) == [0, 0, 64, 64]  # the whole image
    assert regions[-1].histogram.sum() == pytest.approx(1.0)


def test_selective_search_recall_far_above_random_boxes_of_the_same_count(scenes):
    from apps.detect import selective_search as ss
    from apps.detect.selective_search import proposal_recall, selective_search

    test = scenes["test"]
    proposals = [selective_search(image) for image in test["image"]]
    rng = np.random.default_rng(0)
    sizes = scenes["train"]["boxes"][scenes["train"]["classes"] >= 0]
    guesses = [random_boxes(rng, len(p), 64, sizes) for p in proposals]  # as many, of the objects' sizes
    for count in (5, 10):
        searched = proposal_recall(proposals, test, counts=[count])[0]
        guessed = proposal_recall(guesses, test, counts=[count])[0]
        assert searched > max(0.5, guessed + 0.25), (count, searched, guessed)
    # The merging makes the objects: at a fine segmentation scale its regions find far more objects
    # than the initial regions alone, which cut items into parts.
    initial, grouped = [], []
    for image in test["image"][..., 0]:
        labels = ss.initial_segmentation(image, 30)
        regions, _ = ss.hierarchical_grouping(image, labels)
        initial.append(np.stack([r.box for r in regions[:labels.max() + 1]]))
        grouped.append(np.stack([r.box for r in regions]))
    assert proposal_recall(grouped, test)[0] > proposal_recall(initial, test)[0] + 0.1


def test_classic_rcnn_beats_random_boxes_and_exports_its_crop_classifier(scenes, tmp_path):
    from apps.detect import rcnn_classic

    quick = dict(scales=(30, 100), similarities=(("colour", "size", "fill"),))  # a third of the default search
    train_proposals, _ = rcnn_classic.propose(scenes["train"]["image"], **quick)
    test = scenes["test"]
    test_proposals, _ = rcnn_classic.propose(test["image"], **quick)
    classifier = rcnn_classic.train(scenes["train"], train_proposals, NUM_CLASSES, epochs=3, seed=0)
    found = rcnn_classic.detect(classifier, test["image"].astype(np.float32), test_proposals, NUM_CLASSES)
    rcnn_map = detection_metrics(found, ground_truths(test), NUM_CLASSES)["map50"]
    random_map = random_map50(test)
    assert rcnn_map > max(0.15, 5 * random_map), (rcnn_map, random_map)
    for det in found:  # per-class NMS: no two same-class detections overlap more than IoU 0.3
        for c in set(det["classes"]):
            same = det["boxes"][det["classes"] == c]
            iou = iou_matrix(same, same) - np.eye(len(same))
            assert iou.max(initial=0.0) <= rcnn_classic.NMS_IOU + 1e-6

    crops = patches.warp(test["image"], test_proposals[0][:8], np.zeros(8))
    calibration = rcnn_classic.calibration_patches(scenes["train"]["image"], train_proposals)
    report = rcnn_classic.export_classifier(classifier, crops, calibration, export_dir=str(tmp_path), kinds=("float",))
    assert report["max_abs_diff"]["float"] <= export.TOLERANCES["float"]
    assert os.path.isfile(report["tflite"]["int8"]) and report["max_abs_diff"]["int8"] <= export.TOLERANCES["int8"]
    np.testing.assert_allclose(report["saved_model_outputs"]["probabilities"], classifier.predict(crops, verbose=0),
                               atol=1e-5)


def test_concept_verbs_refuse_bad_options_in_one_line(tmp_path, capsys):
    from apps.detect.__main__ import main
    from core.errors import run_cli

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    cases = [(["localize", "--seed", "-1"], "--seed must be at least 0, got -1"),
             (["localize", "--box-weight", "nan"], "--box-weight must be a finite number of at least 0, got nan"),
             (["localize", "--box-weight", "-2"], "--box-weight must be at least 0.0, got -2.0"),
             (["sliding-window", "--seed", "-1"], "--seed must be at least 0, got -1"),
             (["sliding-window", "--run", str(blocker)], "cannot write to the output folder"),
             (["rcnn-classic", "--run", str(blocker / "sub")], "cannot write to the output folder")]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            run_cli(main, argv, prog="apps.detect")
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("apps.detect: error:") and message in err and "\n" not in err, (argv, err)
