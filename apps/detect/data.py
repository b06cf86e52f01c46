"""Scenes in, detector targets out.

Scenes are the numpy dicts of `core.scenes.generate` (image, boxes xyxy pixels,
classes with -1 padding, instances); `load_scenes` reads the same from the
tensorflow-datasets `generated_scenes/<config>` (normalized yxyx boxes there,
converted with keras-cv). Targets are computed once per split in numpy and
batched with `core.data.batched`.
"""

import numpy as np
import tensorflow as tf
from keras_cv import bounding_box

from apps.detect import boxes as box_utils
from core import data
from core import scenes as scene_lib

CHUNK = 512       # scenes per vectorized target computation (bounded memory)
MASK_CHUNK = 64   # scenes per mask resampling: R full-size masks each


def load_scenes(config, split, limit=None, data_dir=None):
    """A split of the tfds scene dataset as the numpy dict of `core.scenes.generate`."""
    dataset = scene_lib.load(split, config=config, data_dir=data_dir)  # an unknown config: UserError
    spec = scene_lib.spec_of(config)
    size, k = spec.size, spec.max_objects
    if limit:
        dataset = dataset.take(limit)

    def flatten(example):
        n = tf.shape(example["objects"]["label"])[0]
        pad = [[0, k - n]]
        return {"image": example["image"], "instances": example["instances"],
                "boxes": tf.pad(example["objects"]["bbox"], pad + [[0, 0]]),
                "classes": tf.pad(tf.cast(example["objects"]["label"], tf.int32), pad, constant_values=-1)}

    batches = list(dataset.map(flatten).batch(1024).as_numpy_iterator())
    result = {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}
    boxes = np.asarray(bounding_box.convert_format(result["boxes"], source="rel_yxyx", target="xyxy",
                                                   image_shape=(size, size, 1)))
    result["boxes"] = np.where((result["classes"] >= 0)[..., None], boxes, 0.0).astype(np.float32)
    result["num_objects"] = (result["classes"] >= 0).sum(axis=1).astype(np.int32)
    return result


def mirrored(scenes):
    """The scenes flipped left-right, with their boxes (xyxy pixels, right edge exclusive), instance maps and
    label maps: more training scenes without inventing items."""
    size = scenes["image"].shape[2]
    valid = scenes["classes"] >= 0
    boxes = scenes["boxes"].copy()
    boxes[..., 0] = np.where(valid, size - scenes["boxes"][..., 2], 0.0)
    boxes[..., 2] = np.where(valid, size - scenes["boxes"][..., 0], 0.0)
    flipped = {key: scenes[key][:, :, ::-1] for key in ("image", "instances", "semantic") if key in scenes}
    return {**scenes, **flipped, "boxes": boxes}


def with_mirrors(scenes):
    """The scenes followed by their mirror images."""
    return _concatenate([scenes, mirrored(scenes)])


def roi_targets(scenes, num_rois, mask_size, num_classes, rng):
    """Training RoIs of the two-stage detector and their targets, per scene:
    rois (N, R, 4) xyxy; labels (N, R) (the object's class where IoU >= 0.5, else
    `num_classes` = background); deltas (N, R, 5) (encoded object box relative to
    the RoI + 1 for positives); masks (N, R, M, M) uint8, the matched object's
    visible pixels resampled in the RoI at the RoIAlign bin centres."""
    n, size = len(scenes["image"]), scenes["image"].shape[1]
    rois = np.stack([box_utils.jitter_rois(rng, scenes["boxes"][i], int(scenes["num_objects"][i]), num_rois, size)
                     for i in range(n)])
    valid = scenes["classes"] >= 0
    iou = np.where(valid[:, None, :], box_utils.iou_matrix(rois, scenes["boxes"]), -1.0)  # (N, R, K)
    best = iou.argmax(axis=2)
    positive = iou.max(axis=2) >= box_utils.POSITIVE_IOU
    labels = np.where(positive, np.take_along_axis(scenes["classes"], best, axis=1), num_classes).astype(np.int32)
    matched = np.take_along_axis(scenes["boxes"], best[..., None], axis=1)
    deltas = np.where(positive[..., None], np.asarray(box_utils.encode(matched, rois)), 0.0)
    deltas = np.concatenate([deltas, positive[..., None]], axis=-1).astype(np.float32)
    masks = np.concatenate([_roi_masks(scenes["instances"][i:i + MASK_CHUNK], rois[i:i + MASK_CHUNK],
                                       best[i:i + MASK_CHUNK], mask_size) for i in range(0, n, MASK_CHUNK)])
    masks = np.where(positive[..., None, None], masks, 0).astype(np.uint8)
    return rois.astype(np.float32), labels, deltas, masks


def _roi_masks(instances, rois, objects, mask_size):
    """Visible mask of object objects[i, r] of scene i sampled in rois[i, r]."""
    n, r = objects.shape
    size = instances.shape[1]
    masks = (instances[:, None] == (objects[..., None, None] + 1)).astype(np.float32)  # (n, R, S, S)
    # crop_and_resize samples the first and last output cells at the box's normalized
    # corners times (size - 1); put them at the first and last bin centres instead.
    x0, y0, x1, y1 = (rois[..., i] for i in range(4))
    step_y, step_x = (y1 - y0) / mask_size, (x1 - x0) / mask_size
    corners = np.stack([y0 + 0.5 * step_y - 0.5, x0 + 0.5 * step_x - 0.5,
                        y1 - 0.5 * step_y - 0.5, x1 - 0.5 * step_x - 0.5], axis=-1) / (size - 1)
    sampled = tf.image.crop_and_resize(masks.reshape(n * r, size, size, 1), corners.reshape(-1, 4).astype(np.float32),
                                       np.arange(n * r, dtype=np.int32), (mask_size, mask_size))
    return (sampled.numpy()[..., 0] >= 0.5).reshape(n, r, mask_size, mask_size)


def detector_dataset(detector, scenes, num_classes, batch_size, *, shuffle=False, seed=0):
    """Batched tf.data of (inputs, targets) for `fit`."""
    image_size = scenes["image"].shape[1]
    rng = np.random.default_rng(seed)
    parts = [detector.targets({k: v[i:i + CHUNK] for k, v in scenes.items()}, image_size, num_classes, rng)
             for i in range(0, len(scenes["image"]), CHUNK)]
    x, y = (_concatenate([p[j] for p in parts]) for j in (0, 1))
    return data.batched(tf.data.Dataset.from_tensor_slices((x, y)), batch_size, shuffle=shuffle, seed=seed,
                        augment=detector.expand_targets(num_classes))


def _concatenate(values):
    if isinstance(values[0], dict):
        return {key: np.concatenate([v[key] for v in values]) for key in values[0]}
    return np.concatenate(values)


def ground_truths(scenes):
    """Per scene the dict of `metrics.mean_average_precision`."""
    return [{"boxes": scenes["boxes"][i, :n], "classes": scenes["classes"][i, :n]}
            for i, n in enumerate(scenes["num_objects"])]
