"""The inference-only layers of the detectors: box decoding + non-max
suppression into fixed-size outputs, and pasting RoI masks into the image.

NMS: keras-cv's `keras_cv.layers.NonMaxSuppression` (TensorFlow backend) wraps
`tf.image.non_max_suppression_padded`, and that op converts to TFLite builtins,
but the layer picks each box's class with `keras.ops.argmax`, whose TF-backend
version bit-tests for -0.0 with `tf.BitwiseAnd` -- not a TFLite builtin (the
converter asks for SELECT_TF_OPS). So `Detections` calls the same padded NMS op
directly and takes the class with `tf.math.argmax`: the exported graph is all
builtins. Boxes enter NMS in keras-cv's "yxyx" via `bounding_box.convert_format`.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops
from keras_cv import bounding_box

from apps.detect import boxes as box_utils


@keras.saving.register_keras_serializable(package="detect")
class DecodeBoxes(keras.layers.Layer):
    """Box deltas (B, A, 4) relative to fixed anchors, or to per-example
    reference boxes given as a second input, -> xyxy boxes clipped to the image."""

    def __init__(self, image_size, anchors=None, **kwargs):
        super().__init__(**kwargs)
        self.image_size = int(image_size)
        self.anchors = None if anchors is None else np.asarray(anchors, np.float32)

    def call(self, deltas, reference=None):
        reference = self.anchors[None] if reference is None else reference
        return ops.clip(box_utils.decode(deltas, reference), 0.0, float(self.image_size))

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size,
                "anchors": None if self.anchors is None else self.anchors.tolist()}


@keras.saving.register_keras_serializable(package="detect")
class Detections(keras.layers.Layer):
    """Class-agnostic NMS over each box's best class, padded to `max_detections`.

    Inputs boxes (B, N, 4) xyxy and class scores (B, N, C) in [0, 1]. Returns
    boxes (B, D, 4), classes (B, D) int32 (-1 past the valid ones), scores
    (B, D) (0 past them), num_detections (B,) int32, and the indices (B, D) of
    the kept boxes among the N (for gathering per-box extras such as masks).
    Class-agnostic NMS suits scenes whose objects overlap little (IoU <= 0.2 here).
    """

    def __init__(self, max_detections=10, iou_threshold=0.5, score_threshold=0.05, **kwargs):
        super().__init__(**kwargs)
        self.max_detections = int(max_detections)
        self.iou_threshold = float(iou_threshold)
        self.score_threshold = float(score_threshold)

    def call(self, boxes, scores):
        confidence = tf.reduce_max(scores, axis=-1)
        classes = tf.math.argmax(scores, axis=-1, output_type=tf.int32)
        index, count = tf.image.non_max_suppression_padded(
            bounding_box.convert_format(boxes, source="xyxy", target="yxyx"), confidence,
            max_output_size=self.max_detections, iou_threshold=self.iou_threshold,
            score_threshold=self.score_threshold, pad_to_max_output_size=True)
        valid = tf.range(self.max_detections)[None, :] < count[:, None]
        return {
            "boxes": tf.where(valid[..., None], tf.gather(boxes, index, batch_dims=1), 0.0),
            "classes": tf.where(valid, tf.gather(classes, index, batch_dims=1), -1),
            "scores": tf.where(valid, tf.gather(confidence, index, batch_dims=1), 0.0),
            "num_detections": count,
            "indices": index,
        }

    def get_config(self):
        return {**super().get_config(), "max_detections": self.max_detections,
                "iou_threshold": self.iou_threshold, "score_threshold": self.score_threshold}


@keras.saving.register_keras_serializable(package="detect")
class PasteMasks(keras.layers.Layer):
    """Paste (B, D, M, M) RoI masks into (B, D, S, S) image masks inside their boxes.

    The inverse of RoIAlign's resampling: image pixel centre y + 0.5 lies at mask
    coordinate u = (y + 0.5 - y1) / (y2 - y1) * M - 0.5; bilinear weights
    max(0, 1 - |u - j|) for the M mask rows (zero outside the box) make the
    pasted mask W_y m W_x^T -- two matmuls, no gather or resize (TFLite-friendly).
    """

    def __init__(self, image_size, **kwargs):
        super().__init__(**kwargs)
        self.image_size = int(image_size)

    def _weights(self, start, end, cells):
        pixel = ops.cast(ops.arange(self.image_size), "float32") + 0.5                 # (S,)
        u = (pixel - start[..., None]) / ops.maximum(end - start, 1e-3)[..., None] * cells - 0.5  # (B, D, S)
        inside = ops.cast((u >= -0.5) & (u <= cells - 0.5), "float32")
        u = ops.clip(u, 0.0, cells - 1.0)
        grid = ops.cast(ops.arange(cells), "float32")
        return ops.relu(1.0 - ops.abs(u[..., None] - grid)) * inside[..., None]           # (B, D, S, M)

    def call(self, masks, boxes):
        cells = masks.shape[-1]
        wy = self._weights(boxes[..., 1], boxes[..., 3], cells)
        wx = self._weights(boxes[..., 0], boxes[..., 2], cells)
        rows = ops.einsum("bdyj,bdjk->bdyk", wy, masks)
        return ops.einsum("bdyk,bdxk->bdyx", rows, wx)

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size}


@keras.saving.register_keras_serializable(package="detect")
class SelectMasks(keras.layers.Layer):
    """Per-RoI, per-class mask logits (B, N, M, M, C) -> the kept detections' masks
    (B, D, M, M) as probabilities: the RoI at `indices`, the channel of its class
    (zero where the class is -1, i.e. past the valid detections)."""

    def call(self, mask_logits, indices, classes):
        picked = tf.gather(mask_logits, indices, batch_dims=1)                       # (B, D, M, M, C)
        in_class = tf.one_hot(classes, mask_logits.shape[-1])                 # -1 -> all zeros
        logits = tf.reduce_sum(picked * in_class[:, :, None, None, :], axis=-1)
        return tf.sigmoid(logits) * tf.cast(classes >= 0, logits.dtype)[..., None, None]
