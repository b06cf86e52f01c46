"""Detection by classifying crops: the common core of the sliding-window detector and
classic R-CNN, which differ only in where their boxes come from (a fixed grid of windows
vs selective-search proposals).

  boxes of an image -> crop each box and warp it to PATCH x PATCH pixels (bilinear,
  aspect ratio not kept, as R-CNN does) -> a small CNN with num_classes + 1 softmax
  outputs (the last = background) -> NMS -> detections.

Training crops are the same kind of boxes on training scenes, labelled by IoU with the
objects: >= 0.5 takes the object's class (R-CNN's fine-tuning rule), < 0.3 is background
(in between: left out), the objects' own boxes are positives too, and background crops
are capped at three per positive (R-CNN's 1:3 mini-batches).
"""

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from apps.detect import boxes as box_utils

PATCH = 24                   # side of the warped crops (Fashion-MNIST items are 28 px)
POSITIVE_IOU, BACKGROUND_IOU = 0.5, 0.3
NEGATIVES_PER_POSITIVE = 3
SCORE_THRESHOLD = 0.05


def warp(images, boxes, image_index, size=PATCH):
    """Crops of `boxes` (N, 4) xyxy pixels of images[image_index] resized to (N, size, size, 1).

    crop_and_resize samples its first and last output rows at the given normalised
    coordinates times (S - 1); they are put at the centres of the first and last of
    `size` equal bins of the box (what a resize of the crop would sample).
    """
    boxes = np.asarray(boxes, np.float32)
    side = images.shape[1]
    step = (boxes[:, 2:] - boxes[:, :2]) / size  # (N, 2): x, y
    start = boxes[:, :2] + 0.5 * step - 0.5
    end = boxes[:, 2:] - 0.5 * step - 0.5
    corners = np.stack([start[:, 1], start[:, 0], end[:, 1], end[:, 0]], axis=1) / (side - 1)
    return tf.image.crop_and_resize(np.asarray(images, np.float32), corners.astype(np.float32),
                                    np.asarray(image_index, np.int32), (size, size)).numpy()


def patch_classifier(num_classes, size=PATCH, name="patch_classifier"):
    """patches (B, size, size, 1) raw pixels 0-255 -> probabilities (B, num_classes + 1), last = background."""
    patches = keras.Input((size, size, 1), name="patches")
    x = layers.Rescaling(1.0 / 255.0, name="scale")(patches)
    for i, filters in enumerate((8, 16, 32)):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{i + 1}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(64, activation="relu", name="fc")(x)
    probabilities = layers.Dense(num_classes + 1, activation="softmax", name="probabilities")(x)
    return keras.Model(patches, probabilities, name=name)


def label_boxes(boxes, truth_boxes, truth_classes, num_classes):
    """Labels of candidate boxes (N, 4) of one image: the class of an object they overlap with
    IoU >= POSITIVE_IOU, num_classes (background) below BACKGROUND_IOU, -1 (unused) in between."""
    if not len(truth_boxes):
        return np.full(len(boxes), num_classes, np.int32)
    iou = box_utils.iou_matrix(np.asarray(boxes, np.float32), np.asarray(truth_boxes, np.float32))
    best = iou.argmax(axis=1)
    best_iou = iou.max(axis=1)
    labels = np.where(best_iou >= POSITIVE_IOU, truth_classes[best],
                      np.where(best_iou < BACKGROUND_IOU, num_classes, -1))
    return labels.astype(np.int32)


def training_crops(scenes, boxes_of, num_classes, rng):
    """(patches, labels) from the candidate boxes `boxes_of(i)` of each scene i, plus the objects'
    own boxes; background capped at NEGATIVES_PER_POSITIVE per positive (a random subset)."""
    chosen_boxes, chosen_labels, index = [], [], []
    for i in range(len(scenes["image"])):
        n = int(scenes["num_objects"][i])
        truth, classes = scenes["boxes"][i, :n], scenes["classes"][i, :n]
        candidates = np.concatenate([np.asarray(boxes_of(i), np.float32).reshape(-1, 4), truth])
        labels = label_boxes(candidates, truth, classes, num_classes)
        positive = np.flatnonzero((labels >= 0) & (labels < num_classes))
        negative = np.flatnonzero(labels == num_classes)
        negative = rng.permutation(negative)[:max(NEGATIVES_PER_POSITIVE * len(positive), 2)]
        keep = np.concatenate([positive, negative])
        chosen_boxes.append(candidates[keep])
        chosen_labels.append(labels[keep])
        index.append(np.full(len(keep), i))
    index = np.concatenate(index)
    patches = warp(scenes["image"], np.concatenate(chosen_boxes), index)
    return patches, np.concatenate(chosen_labels)


def train_classifier(patches, labels, num_classes, *, epochs, batch_size=64, learning_rate=2e-3, seed=0,
                     validation=None):
    """A fresh `patch_classifier` trained with Adam on softmax cross-entropy; returns it."""
    keras.utils.set_random_seed(seed)
    model = patch_classifier(num_classes)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(patches, labels, batch_size=batch_size, epochs=epochs, shuffle=True, validation_data=validation,
              verbose=2)
    return model


def classify_boxes(classifier, images, boxes_per_image, batch_size=1024):
    """Class probabilities (N_i, C + 1) of each image's boxes (a list of (N_i, 4))."""
    counts = [len(b) for b in boxes_per_image]
    index = np.repeat(np.arange(len(images)), counts)
    patches = warp(images, np.concatenate(boxes_per_image).reshape(-1, 4), index)
    # Direct calls, not predict(): no traced function to build for a few thousand crops.
    probabilities = np.concatenate([classifier(patches[i:i + batch_size], training=False).numpy()
                                    for i in range(0, len(patches), batch_size)] or [np.zeros((0, 1))])
    return np.split(probabilities, np.cumsum(counts)[:-1])


def non_max_suppression(boxes, scores, iou_threshold, max_detections):
    """Indices of the boxes (N, 4) xyxy kept by greedy NMS, best score first: TensorFlow's NMS op, the one
    the app's `Detections` layer runs in its padded batch form (which, run eagerly box list by box list,
    costs seconds a call)."""
    if not len(boxes):
        return np.zeros(0, int)
    yxyx = np.asarray(boxes, np.float32)[:, [1, 0, 3, 2]]
    return tf.image.non_max_suppression(yxyx, np.asarray(scores, np.float32), max_detections, iou_threshold,
                                        SCORE_THRESHOLD).numpy()


def detections_from_scores(boxes_per_image, probabilities, num_classes, *, per_class=False, iou_threshold=0.5,
                           max_detections=10):
    """Per image a dict boxes, classes, scores (the app's format) from scored candidate boxes.

    Class-agnostic (per_class=False): NMS over each box's best class, as the app's SSD does.
    Per class (R-CNN): NMS on each class's scores alone, then the best `max_detections` of all."""
    result = []
    for boxes, p in zip(boxes_per_image, probabilities):
        p = p[:, :num_classes]  # the background column is no detection
        if per_class:
            kept = [(k, c) for c in range(num_classes)
                    for k in non_max_suppression(boxes, p[:, c], iou_threshold, max_detections)]
            index, classes = np.array([k for k, _ in kept], int), np.array([c for _, c in kept], int)
        else:
            classes = p.argmax(axis=1)
            index = non_max_suppression(boxes, p.max(axis=1), iou_threshold, max_detections)
            classes = classes[index]
        scores = p[index, classes] if len(index) else np.zeros(0, np.float32)
        best = np.argsort(-scores, kind="stable")[:max_detections]
        result.append({"boxes": np.asarray(boxes, np.float32)[index[best]].reshape(-1, 4),
                       "classes": classes[best].astype(np.int32), "scores": scores[best].astype(np.float32)})
    return result
