"""Anchors, box encoding and target assignment.

Every box in this app is in pixels as [x_min, y_min, x_max, y_max] ("xyxy" in
keras-cv's names; max exclusive, as `core.scenes` writes them). Format
conversions and IoU come from `keras_cv.bounding_box`; what keras-cv 0.9 does
not offer as a plain function (an anchor grid, the Faster R-CNN box deltas,
the RetinaNet matching rule) is written here.
"""

import numpy as np
from keras import ops
from keras_cv import bounding_box

# Faster R-CNN deltas divided by these "variances" (SSD), so each target has about unit scale.
BOX_VARIANCES = (0.1, 0.1, 0.2, 0.2)
# Anchor levels at 96x96: (stride, side lengths); scaled with the image for other sizes.
ANCHOR_LEVELS = ((8, (20, 32)), (16, (44, 60)))
ASPECT_RATIOS = (0.5, 1.0, 2.0)  # height / width: bags are wide, trousers and dresses tall
POSITIVE_IOU, NEGATIVE_IOU = 0.5, 0.4  # RetinaNet: between the two an anchor is ignored
IGNORE, BACKGROUND = -2, -1  # anchor labels besides the classes 0..C-1
MAX_LOG_SCALE = float(np.log(1000.0 / 16))  # clip exp() of the size deltas (Detectron's bound)


def anchors_per_cell(levels=ANCHOR_LEVELS):
    return [len(sizes) * len(ASPECT_RATIOS) for _, sizes in levels]


def make_anchors(image_size, levels=ANCHOR_LEVELS, ratios=ASPECT_RATIOS):
    """(A, 4) xyxy anchors, level by level, each in (row, column, anchor) order --
    the order in which a head's (H, W, anchors * k) output reshapes to (H*W*anchors, k)."""
    scale = image_size / 96.0
    result = []
    for stride, sizes in levels:
        cells = image_size // stride
        centres = (np.arange(cells) + 0.5) * stride
        cy, cx = np.meshgrid(centres, centres, indexing="ij")
        shapes = [(size * scale / np.sqrt(r), size * scale * np.sqrt(r)) for size in sizes for r in ratios]  # (w, h)
        w, h = (np.array(v, np.float32) for v in zip(*shapes))
        boxes = np.stack([cx[..., None] - w / 2, cy[..., None] - h / 2, cx[..., None] + w / 2, cy[..., None] + h / 2],
                         axis=-1)
        result.append(boxes.reshape(-1, 4))
    return np.concatenate(result).astype(np.float32)


def encode(boxes, anchors):
    """Deltas (t_x, t_y, t_w, t_h) / BOX_VARIANCES of `boxes` relative to `anchors` (Ren et al. 2015, Eq. 2)."""
    b = bounding_box.convert_format(boxes, source="xyxy", target="center_xywh")
    a = bounding_box.convert_format(anchors, source="xyxy", target="center_xywh")
    deltas = ops.concatenate([(b[..., :2] - a[..., :2]) / a[..., 2:],
                              ops.log(ops.maximum(b[..., 2:], 1e-6) / a[..., 2:])], axis=-1)
    return deltas / ops.convert_to_tensor(BOX_VARIANCES, deltas.dtype)


def decode(deltas, anchors):
    """The boxes whose `encode` against `anchors` is `deltas` (xyxy)."""
    deltas = ops.convert_to_tensor(deltas) * ops.convert_to_tensor(BOX_VARIANCES, "float32")
    a = bounding_box.convert_format(ops.convert_to_tensor(anchors, "float32"), source="xyxy", target="center_xywh")
    centre = a[..., :2] + deltas[..., :2] * a[..., 2:]
    size = a[..., 2:] * ops.exp(ops.minimum(deltas[..., 2:], MAX_LOG_SCALE))
    return bounding_box.convert_format(ops.concatenate([centre, size], axis=-1), source="center_xywh", target="xyxy")


def iou_matrix(boxes_a, boxes_b):
    """(..., N, M) IoU of xyxy boxes, by keras-cv (continuous areas, no +1)."""
    if boxes_a.shape[-2] == 0 or boxes_b.shape[-2] == 0:
        return np.zeros(boxes_a.shape[:-1] + (boxes_b.shape[-2],), np.float32)
    return np.asarray(bounding_box.compute_iou(boxes_a.astype(np.float32), boxes_b.astype(np.float32), "xyxy"))


def assign_anchors(anchors, gt_boxes, gt_classes):
    """RetinaNet targets of a batch of scenes.

    gt_boxes (N, K, 4) xyxy and gt_classes (N, K) (-1 = padding). An anchor whose
    best IoU with an object is >= POSITIVE_IOU takes that object's class, below
    NEGATIVE_IOU it is BACKGROUND, in between IGNORE; every object also claims its
    best anchor, so small or thin objects are never left without one.
    Returns (N, A, 5) float32: encoded box deltas and the label.
    """
    valid = gt_classes >= 0
    iou = iou_matrix(np.broadcast_to(anchors, (len(gt_boxes),) + anchors.shape), gt_boxes)  # (N, A, K)
    iou = np.where(valid[:, None, :], iou, -1.0)
    best_object = iou.argmax(axis=2)
    best_iou = iou.max(axis=2)
    labels = np.where(best_iou >= POSITIVE_IOU, np.take_along_axis(gt_classes, best_object, axis=1),
                      np.where(best_iou < NEGATIVE_IOU, BACKGROUND, IGNORE))
    scene, obj = np.nonzero(valid)
    best_anchor = iou[scene, :, obj].argmax(axis=1)
    labels[scene, best_anchor] = gt_classes[scene, obj]
    best_object[scene, best_anchor] = obj
    matched = np.take_along_axis(gt_boxes, best_object[..., None], axis=1)  # (N, A, 4)
    deltas = np.asarray(encode(matched.astype(np.float32), anchors[None]))
    deltas = np.where((labels >= 0)[..., None], deltas, 0.0)
    return np.concatenate([deltas, labels[..., None]], axis=-1).astype(np.float32)


def random_boxes(rng, count, image_size, gt_boxes):
    """`count` boxes of random position whose sides are drawn from those of `gt_boxes`
    (xyxy, any shape (..., 4)): the trivial baseline knows the size of the objects, not where they are."""
    sides = gt_boxes.reshape(-1, 4)
    sides = sides[:, 2:] - sides[:, :2]
    sides = sides[(sides > 0).all(axis=1)]
    if not len(sides):
        sides = np.full((1, 2), image_size / 4.0)
    wh = sides[rng.integers(len(sides), size=count)]
    corner = rng.uniform(0, 1, (count, 2)) * (image_size - wh)
    return np.concatenate([corner, corner + wh], axis=1).astype(np.float32)


def jitter_rois(rng, gt_boxes, num_objects, num_rois, image_size, copies=2):
    """Training RoIs of the two-stage detector for one scene: `copies` jittered copies of
    each object's box (mostly positives) and random boxes (mostly background).

    Feeding the heads such boxes instead of the RPN's proposals keeps the training graph
    a plain functional model (the targets are computed before the batch); the jitter is wide
    enough that the heads see the quality range of proposals they meet at inference.
    """
    rois = []
    for box in gt_boxes[:num_objects]:
        w, h = box[2] - box[0], box[3] - box[1]
        for _ in range(copies):
            cx = (box[0] + box[2]) / 2 + rng.normal(0, 0.12) * w
            cy = (box[1] + box[3]) / 2 + rng.normal(0, 0.12) * h
            nw, nh = w * np.exp(rng.normal(0, 0.2)), h * np.exp(rng.normal(0, 0.2))
            rois.append([cx - nw / 2, cy - nh / 2, cx + nw / 2, cy + nh / 2])
    rois = np.array(rois[:num_rois], np.float32).reshape(-1, 4)
    extra = num_rois - len(rois)
    sides = rng.uniform(0.12, 0.6, (extra, 2)) * image_size
    corner = rng.uniform(0, 1, (extra, 2)) * (image_size - sides)
    rois = np.concatenate([rois, np.concatenate([corner, corner + sides], axis=1)])
    return np.clip(rois, 0, image_size).astype(np.float32)
