"""Detection: mAP against hand-computed cases, anchors, losses, layer and model shapes, CLI errors."""

import numpy as np
import pytest

from apps.detect import boxes as box_utils
from apps.detect.metrics import COCO_THRESHOLDS, mean_average_precision
from core.errors import UserError, run_cli


def _gt(boxes, classes):
    return {"boxes": np.array(boxes, np.float32).reshape(-1, 4), "classes": np.array(classes)}


def _det(boxes, classes, scores):
    return {"boxes": np.array(boxes, np.float32).reshape(-1, 4), "classes": np.array(classes),
            "scores": np.array(scores, np.float32)}


A, B, C = [0, 0, 10, 10], [20, 20, 40, 30], [50, 50, 70, 80]


def map50(detections, truths, num_classes=2):
    return mean_average_precision(detections, truths, num_classes, (0.5,))[0]


def test_map_of_hand_computed_cases():
    truths = [_gt([A, B], [0, 1]), _gt([C], [0])]
    # Perfect detections: AP 1 for every class, at every IoU threshold.
    perfect = [_det([A, B], [0, 1], [0.9, 0.8]), _det([C], [0], [0.7])]
    assert map50(perfect, truths) == 1.0
    assert mean_average_precision(perfect, truths, 2, COCO_THRESHOLDS)[0] == 1.0

    # One miss: class 0 finds 1 of its 2 objects -> precision 1 up to recall 0.5, then nothing:
    # 51 of the 101 recall points (0, 0.01, ..., 0.5) score 1. Class 1 is perfect.
    one_miss = [_det([A, B], [0, 1], [0.9, 0.8]), _det([], [], [])]
    ap0 = 51 / 101
    assert map50(one_miss, truths) == pytest.approx((ap0 + 1.0) / 2)

    # A false positive ranked above the true one halves the precision at every recall: AP 0.5;
    # ranked below it (after full recall) it costs nothing.
    single = [_gt([A], [0])]
    assert map50([_det([C, A], [0, 0], [0.9, 0.8])], single, 1) == pytest.approx(0.5)
    assert map50([_det([C, A], [0, 0], [0.7, 0.8])], single, 1) == pytest.approx(1.0)

    # Duplicates: a second detection of a found object is a false positive.
    # TP (A), FP (A again), TP (B): precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1;
    # envelope 1 for recall <= 0.5 (51 points), 2/3 above (50 points).
    two = [_gt([A, B], [0, 0])]
    duplicates = [_det([A, A, B], [0, 0, 0], [0.9, 0.8, 0.7])]
    assert map50(duplicates, two, 1) == pytest.approx((51 + 50 * 2 / 3) / 101)

    # Two classes: class 0 perfect; the class-1 object detected as class 0 is a class-0
    # false positive ranked below the true one (AP_0 = 1) and a class-1 miss (AP_1 = 0).
    swapped = [_det([A, B], [0, 0], [0.9, 0.8])]
    value, per_class = mean_average_precision(swapped, [_gt([A, B], [0, 1])], 3, (0.5,))
    assert value == pytest.approx(0.5)
    assert per_class[0.5] == [1.0, 0.0, None]  # class 2 has no ground truth: not averaged


def test_map_over_iou_thresholds():
    # IoU 0.72 (the box covers 72 % of the object) matches at 0.5, 0.55, 0.6, 0.65, 0.7 only.
    loose = [_det([[0, 0, 10, 7.2]], [0], [0.9])]
    truth = [_gt([A], [0])]
    assert box_utils.iou_matrix(loose[0]["boxes"], truth[0]["boxes"])[0, 0] == pytest.approx(0.72)
    assert map50(loose, truth, 1) == 1.0
    assert mean_average_precision(loose, truth, 1, COCO_THRESHOLDS)[0] == pytest.approx(0.5)


def test_box_encoding_round_trip_and_anchor_targets():
    rng = np.random.default_rng(0)
    anchors = box_utils.make_anchors(96)
    # Two levels (12x12 and 6x6 cells), 2 sizes x 3 aspect ratios each.
    assert anchors.shape == (12 * 12 * 6 + 6 * 6 * 6, 4)
    centre = (anchors[:, :2] + anchors[:, 2:]) / 2
    assert np.allclose(centre[0], [4, 4]) and np.allclose(centre[6], [12, 4])  # row-major (y, x, anchor) order
    boxes = box_utils.random_boxes(rng, len(anchors), 96, np.array([[0, 0, 30, 12], [0, 0, 8, 40]], np.float32))
    deltas = np.asarray(box_utils.encode(boxes, anchors))
    assert np.allclose(np.asarray(box_utils.decode(deltas, anchors)), boxes, atol=1e-3)
    assert np.allclose(np.asarray(box_utils.encode(anchors, anchors)), 0.0, atol=1e-6)
    # Hand case: a box shifted by 10 % of the anchor's width and twice as tall.
    anchor = np.array([[10, 10, 30, 30]], np.float32)
    shifted = np.array([[12, 0, 32, 40]], np.float32)
    assert np.allclose(np.asarray(box_utils.encode(shifted, anchor)), [[1.0, 0.0, 0.0, np.log(2) / 0.2]], atol=1e-5)

    gt_boxes = np.array([[[10, 10, 40, 40], [60, 20, 70, 80], [0, 0, 0, 0]]], np.float32)
    gt_classes = np.array([[3, 7, -1]])
    targets = box_utils.assign_anchors(anchors, gt_boxes, gt_classes)
    labels = targets[0, :, 4]
    assert set(np.unique(labels)) <= {box_utils.IGNORE, box_utils.BACKGROUND, 3, 7}
    assert (labels == 3).any() and (labels == 7).any()  # the thin object gets its best anchor
    decoded = np.asarray(box_utils.decode(targets[0, :, :4], anchors))
    assert np.allclose(decoded[labels == 3], gt_boxes[0, 0], atol=1e-3)
    assert np.allclose(decoded[labels == 7], gt_boxes[0, 1], atol=1e-3)
    iou = box_utils.iou_matrix(anchors, gt_boxes[0, :2]).max(axis=1)
    far = labels[iou < box_utils.NEGATIVE_IOU]  # background, except an object's forced best anchor
    assert np.isin(far, [box_utils.BACKGROUND, 3, 7]).all() and (far != box_utils.BACKGROUND).sum() <= 2


def _focal(p, y, alpha=0.25, gamma=2.0):
    p_t = np.where(y == 1, p, 1 - p)
    return -np.where(y == 1, alpha, 1 - alpha) * (1 - p_t) ** gamma * np.log(p_t)


def _smooth_l1(x):
    a = np.abs(x)
    return np.where(a < 1, 0.5 * a * a, a - 0.5).sum(-1)


def test_detection_losses_against_numpy():
    from apps.detect.losses import AnchorLoss, MaskLoss, PositiveBoxLoss

    rng = np.random.default_rng(1)
    num_classes, anchors = 3, 6
    labels = np.array([[2, -1, -2, 0, -1, -1], [-1, -1, -1, -1, 1, -2]], np.float32)
    y_true = np.concatenate([rng.normal(size=(2, anchors, 4)), labels[..., None]], -1).astype(np.float32)
    y_pred = rng.normal(size=(2, anchors, 4 + num_classes)).astype(np.float32)
    loss = np.asarray(AnchorLoss(num_classes, reduction=None)(y_true, y_pred))
    for i in range(2):
        positive, counted = labels[i] >= 0, labels[i] >= -1
        one_hot = np.eye(num_classes)[np.maximum(labels[i], 0).astype(int)] * positive[:, None]
        p = 1 / (1 + np.exp(-y_pred[i, :, 4:].astype(np.float64)))
        focal = (_focal(p, one_hot).sum(-1) * counted).sum()
        box = (_smooth_l1(y_pred[i, :, :4] - y_true[i, :, :4]) * positive).sum()
        assert loss[i] == pytest.approx((focal + box) / positive.sum(), rel=1e-4)

    roi_true = np.concatenate([rng.normal(size=(1, 4, 4)), np.array([[[1], [0], [1], [0]]])], -1).astype(np.float32)
    roi_pred = rng.normal(size=(1, 4, 4)).astype(np.float32)
    expected = _smooth_l1(roi_pred[0] - roi_true[0, :, :4])[[0, 2]].sum() / 2
    assert float(PositiveBoxLoss()(roi_true, roi_pred)) == pytest.approx(expected, rel=1e-5)

    # Masks: only the RoI's class channel counts (-1 elsewhere).
    target = np.full((1, 2, 3, 3, 2), -1.0, np.float32)
    target[0, 0, ..., 1] = rng.integers(0, 2, (3, 3))
    logits = rng.normal(size=(1, 2, 3, 3, 2)).astype(np.float32)
    z, t = logits[0, 0, ..., 1].astype(np.float64), target[0, 0, ..., 1]
    bce = -(t * np.log(1 / (1 + np.exp(-z))) + (1 - t) * np.log(1 - 1 / (1 + np.exp(-z)))).mean()
    assert float(MaskLoss()(target, logits)) == pytest.approx(bce, rel=1e-5)


def test_nms_layer_and_mask_pasting():
    from apps.detect.layers import Detections, PasteMasks, SelectMasks

    boxes = np.array([[A, [1, 0, 11, 10], B, C]], np.float32)            # the second duplicates the first
    scores = np.array([[[0.9, 0.1], [0.8, 0.0], [0.1, 0.7], [0.01, 0.02]]], np.float32)
    out = Detections(max_detections=5, iou_threshold=0.5, score_threshold=0.05)(boxes, scores)
    assert int(out["num_detections"][0]) == 2                             # duplicate suppressed, C below 0.05
    assert np.allclose(out["boxes"][0, :2], [A, B]) and list(np.asarray(out["classes"][0])) == [0, 1, -1, -1, -1]
    assert np.allclose(out["scores"][0], [0.9, 0.7, 0, 0, 0]) and list(np.asarray(out["indices"][0, :2])) == [0, 2]

    # SelectMasks: the kept RoI, its class channel; PasteMasks: a full mask fills exactly its box.
    logits = np.full((1, 4, 14, 14, 2), -20.0, np.float32)
    logits[0, 2, ..., 1] = 20.0
    masks = np.asarray(SelectMasks()(logits, out["indices"], out["classes"]))
    assert masks.shape == (1, 5, 14, 14) and masks[0, 1].min() > 0.99 and masks[0, 0].max() < 0.01
    pasted = np.asarray(PasteMasks(96)(masks, out["boxes"]))
    inside = np.zeros((96, 96), bool)
    inside[20:30, 20:40] = True
    assert pasted.shape == (1, 5, 96, 96)
    assert pasted[0, 1][inside].min() > 0.99 and pasted[0, 1][~inside].max() < 1e-6
    assert pasted[0, 2:].max() == 0.0


def test_rpn_roi_align_heads_and_mask_head_shapes():
    from apps.detect.models import MASK_SIZE, MODELS, NUM_ROIS

    rcnn = MODELS.get("rcnn")
    net = rcnn.build(64, 10)
    anchors = len(box_utils.make_anchors(64))
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 1)).astype(np.float32)
    rois = np.tile(np.array([[4, 4, 30, 40]], np.float32), (2, NUM_ROIS, 1))
    outputs = net({"images": images, "rois": rois})
    assert outputs["rpn"].shape == (2, anchors, 5)                       # objectness + deltas per anchor
    assert outputs["roi_classes"].shape == (2, NUM_ROIS, 11)              # 10 classes + background
    assert outputs["roi_boxes"].shape == (2, NUM_ROIS, 4)
    assert outputs["roi_masks"].shape == (2, NUM_ROIS, MASK_SIZE, MASK_SIZE, 10)  # a mask per RoI and class
    # Identical RoIs of one image get identical head outputs: the heads see only what RoIAlign pools.
    assert np.allclose(outputs["roi_classes"][0, 0], outputs["roi_classes"][0, -1], atol=1e-5)
    inference = rcnn.inference(net, 64, 10)
    boxes, classes, scores, count, masks = inference(images)
    assert boxes.shape == (2, 10, 4) and classes.shape == (2, 10) and scores.shape == (2, 10)
    assert count.shape == (2,) and masks.shape == (2, 10, 64, 64)
    ssd = MODELS.get("ssd").build(64, 10)
    assert ssd(images).shape == (2, anchors, 14)
    with pytest.raises(UserError, match="multiple of 16"):
        MODELS.get("ssd").build(60, 10)


def test_cli_errors_are_one_line(tmp_path, capsys):
    from apps.detect.__main__ import main

    cases = [
        (["train", "--dataset", "imagenet", "--run", str(tmp_path / "r")], "unknown scene dataset 'imagenet'"),
        (["train", "--epochs", "0", "--run", str(tmp_path / "r")], "--epochs must be at least 1"),
        (["train", "--seed", "-1"], "--seed must be at least 0, got -1"),
        (["evaluate", "--run", str(tmp_path / "nothing")], "no training run in"),
        (["export", "--run", str(tmp_path / "nothing")], "no training run in"),
        (["predict", "missing.png", "--run", str(tmp_path / "nothing")], "no training run in"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            run_cli(main, argv, prog="apps.detect")
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("apps.detect: error:") and message in err, (argv, err)
        assert "\n" not in err
    # A name outside the choices is argparse's: its usage, then one error line, exit 2.
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--model", "yolo99"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'yolo99'" in capsys.readouterr().err.strip().splitlines()[-1]


def test_mirrored_scenes_flip_the_boxes_with_the_pixels():
    from apps.detect.data import mirrored, with_mirrors
    from core import scenes

    drawn = scenes.generate(scenes.SceneSpec(size=64, max_objects=3, min_scale=0.8, max_scale=1.4), "train",
                            count=24, seed=0)
    flipped = mirrored(drawn)
    assert drawn["num_objects"].sum() > 24  # scenes with several objects
    for i, n in enumerate(drawn["num_objects"]):
        for box, flipped_box in zip(drawn["boxes"][i, :n].astype(int), flipped["boxes"][i, :n].astype(int)):
            (x1, y1, x2, y2), (u1, v1, u2, v2) = box, flipped_box
            assert (v1, v2, u2 - u1) == (y1, y2, x2 - x1)
            # Boxes are tight: a box one pixel off would cut a column of the item off.
            np.testing.assert_array_equal(flipped["image"][i, v1:v2, u1:u2], drawn["image"][i, y1:y2, x1:x2][:, ::-1])
            np.testing.assert_array_equal(flipped["instances"][i, v1:v2, u1:u2],
                                          drawn["instances"][i, y1:y2, x1:x2][:, ::-1])
        assert not flipped["boxes"][i, n:].any()  # padding stays zero
    twice = mirrored(flipped)
    for key in drawn:
        np.testing.assert_array_equal(twice[key], drawn[key])
    doubled = with_mirrors(drawn)
    assert {key: len(value) for key, value in doubled.items()} == {key: 48 for key in drawn}
    np.testing.assert_array_equal(doubled["classes"][24:], drawn["classes"])
