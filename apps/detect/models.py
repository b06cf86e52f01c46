"""The detector registry: a single-shot detector and a two-stage detector with a mask head.

Both share a small backbone (96x96 gray -> strides 4, 8, 16) and take raw pixels
in [0, 255] as the input `images`. Each detector has
  - a *training* model (functional; what `fit` trains and `model.keras` holds),
  - an *inference* model built from the trained model's parts: decoded boxes,
    non-max suppression, fixed-size outputs [boxes (B, D, 4) xyxy pixels,
    classes (B, D) int32 (-1 = none), scores (B, D), num_detections (B,)] and,
    for the two-stage model, masks (B, D, S, S) -- what evaluate, predict and
    export use;
  - the targets of a batch of scenes (apps/detect/data.py builds them).

ssd   single shot (Liu et al. 2016 / RetinaNet-style head): anchors on the stride-8
      and stride-16 maps, sigmoid class scores trained with focal loss, box deltas
      with smooth L1.
rcnn  two stages (Faster/Mask R-CNN, Ren et al. 2015, He et al. 2017): a region
      proposal network over the same anchors (objectness focal loss + smooth L1),
      RoIAlign (layers/) of each RoI into 7x7 for a classification + box-regression
      head and into 14x14 for a mask head (a mask per class, sigmoid per pixel).
"""

import keras
import numpy as np
from keras import layers, ops
from keras_cv import bounding_box

from apps.detect import boxes as box_utils
from apps.detect.layers import DecodeBoxes, Detections, PasteMasks, SelectMasks
from apps.detect.losses import AnchorLoss, MaskLoss, PositiveBoxLoss
from core import precision
from core.errors import UserError
from core.registry import Registry
from layers import RoIAlign

MODELS = Registry("model")
DEFAULT_MODEL = "ssd"
MAX_DETECTIONS = 10
NUM_ROIS = 16        # RoIs per image through the two-stage heads (training and inference)
MASK_SIZE = 14       # RoIAlign output of the mask head, as in Mask R-CNN
PRIOR = 0.01         # initial foreground probability of every anchor (RetinaNet's bias init)


def check_image_size(image_size):
    if image_size % 16:
        raise UserError(f"detector inputs must be a multiple of 16 pixels wide, got {image_size}")


def _conv(x, filters, name, strides=1):
    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    # momentum 0.9, not Keras' 0.99: the moving statistics must settle within the few hundred
    # steps of a CPU budget, or evaluation runs on stale statistics (val loss stuck at the start).
    x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def backbone(image_size, name="backbone"):
    """images -> feature maps at strides 4 (32 ch), 8 (64 ch) and 16 (96 ch)."""
    images = keras.Input((image_size, image_size, 1), name="images")
    x = layers.Rescaling(1.0 / 255.0, name="scale")(images)
    x = _conv(x, 16, "s2a", strides=2)
    x = _conv(x, 16, "s2b")
    x = _conv(x, 32, "s4a", strides=2)
    c2 = _conv(x, 32, "s4b")
    x = _conv(c2, 64, "s8a", strides=2)
    c3 = _conv(x, 64, "s8b")
    x = _conv(c3, 96, "s16a", strides=2)
    c4 = _conv(x, 96, "s16b")
    return keras.Model(images, [c2, c3, c4], name=name)


def anchor_head(feature_shapes, num_classes, name):
    """A shared-nothing dense head per level: (B, A, 4 + num_classes) box deltas and
    class logits for every anchor of `box_utils.make_anchors`, in the same order."""
    inputs = [keras.Input(shape, name=f"level{i}") for i, shape in enumerate(feature_shapes)]
    outputs = []
    bias = keras.initializers.Constant(-np.log((1 - PRIOR) / PRIOR))
    for i, (features, anchors) in enumerate(zip(inputs, box_utils.anchors_per_cell())):
        x = layers.Conv2D(64, 3, padding="same", activation="relu", name=f"level{i}_conv")(features)
        deltas = layers.Conv2D(anchors * 4, 1, name=f"level{i}_boxes")(x)
        logits = layers.Conv2D(anchors * num_classes, 1, bias_initializer=bias, name=f"level{i}_classes")(x)
        cells = features.shape[1] * features.shape[2] * anchors
        outputs.append(layers.Concatenate(name=f"level{i}_predictions")([
            layers.Reshape((cells, 4))(deltas), layers.Reshape((cells, num_classes))(logits)]))
    return keras.Model(inputs, layers.Concatenate(axis=1, name="predictions")(outputs), name=name)


def _features(net, image_size):
    return [tuple(t.shape[1:]) for t in net.outputs]


def _box_outputs(detections):
    return [detections["boxes"], detections["classes"], detections["scores"], detections["num_detections"]]


@MODELS.register("ssd")
class SingleShot:
    """Single-shot detector: backbone -> anchor head -> (decode + NMS at inference)."""

    output_names = ("boxes", "classes", "scores", "num_detections")

    @staticmethod
    def build(image_size, num_classes):
        check_image_size(image_size)
        images = keras.Input((image_size, image_size, 1), name="images")
        net = backbone(image_size)
        _, c3, c4 = net(images)
        head = anchor_head(_features(net, image_size)[1:], num_classes, "head")
        predictions = layers.Identity(dtype=precision.output_dtype(), name="anchors")(head([c3, c4]))
        model = keras.Model(images, predictions, name="ssd")
        return model

    @staticmethod
    def losses(num_classes):
        return AnchorLoss(num_classes)

    @staticmethod
    def targets(scenes, image_size, num_classes, rng):
        anchors = box_utils.make_anchors(image_size)
        return scenes["image"], box_utils.assign_anchors(anchors, scenes["boxes"], scenes["classes"])

    @staticmethod
    def expand_targets(num_classes):
        return None

    @staticmethod
    def inference(trained, image_size, num_classes, max_detections=MAX_DETECTIONS):
        images = keras.Input((image_size, image_size, 1), name="images")
        predictions = trained(images)
        boxes = DecodeBoxes(image_size, box_utils.make_anchors(image_size), name="decode")(predictions[..., :4])
        scores = layers.Activation("sigmoid", name="class_scores")(predictions[..., 4:])
        detections = Detections(max_detections, iou_threshold=0.5, score_threshold=0.05, name="nms")(boxes, scores)
        return keras.Model(images, _box_outputs(detections), name="ssd_inference")


def roi_heads(feature_shapes, num_classes, num_rois=NUM_ROIS, mask_size=MASK_SIZE):
    """[stride-4 map, stride-8 map, RoIs (B, R, 4) xyxy pixels] ->
    class logits (B, R, C + 1) (last = background), box deltas (B, R, 4) relative
    to the RoI (class-agnostic), mask logits (B, R, M, M, C)."""
    c2 = keras.Input(feature_shapes[0], name="stride4")
    c3 = keras.Input(feature_shapes[1], name="stride8")
    rois = keras.Input((num_rois, 4), name="rois")
    yxyx = bounding_box.convert_format(rois, source="xyxy", target="yxyx")  # RoIAlign's order
    pooled = RoIAlign((7, 7), spatial_scale=1 / 8, sampling_ratio=2, name="box_roi_align")([c3, yxyx])
    x = layers.Reshape((num_rois, -1))(pooled)
    x = layers.Dense(128, activation="relu", name="fc1")(x)
    x = layers.Dense(128, activation="relu", name="fc2")(x)
    class_logits = layers.Dense(num_classes + 1, name="class_logits")(x)
    box_deltas = layers.Dense(4, name="box_deltas", kernel_initializer=keras.initializers.RandomNormal(stddev=0.001))(x)
    # The mask branch reads the finer stride-4 map, reduced to 16 channels first.
    reduced = layers.Conv2D(16, 1, activation="relu", name="mask_reduce")(c2)
    m = RoIAlign((mask_size, mask_size), spatial_scale=1 / 4, sampling_ratio=2, name="mask_roi_align")([reduced, yxyx])
    m = layers.TimeDistributed(layers.Conv2D(16, 3, padding="same", activation="relu"), name="mask_conv1")(m)
    m = layers.TimeDistributed(layers.Conv2D(16, 3, padding="same", activation="relu"), name="mask_conv2")(m)
    mask_logits = layers.TimeDistributed(layers.Conv2D(num_classes, 1), name="mask_logits")(m)
    return keras.Model([c2, c3, rois], [class_logits, box_deltas, mask_logits], name="roi_heads")


@MODELS.register("rcnn")
class TwoStage:
    """Two-stage detector with a mask head.

    Training: the RPN learns objectness + deltas on all anchors; the RoI heads learn on
    the RoIs fed with each batch (jittered ground-truth boxes + random boxes, labelled by
    IoU >= 0.5; see `box_utils.jitter_rois`). Inference: the RPN's top NUM_ROIS proposals
    after NMS (IoU 0.7) go through the same heads, then per-class scores -> NMS -> masks.
    """

    output_names = ("boxes", "classes", "scores", "num_detections", "masks")

    @staticmethod
    def build(image_size, num_classes):
        check_image_size(image_size)
        images = keras.Input((image_size, image_size, 1), name="images")
        rois = keras.Input((NUM_ROIS, 4), name="rois")
        net = backbone(image_size)
        c2, c3, c4 = net(images)
        shapes = _features(net, image_size)
        dtype = precision.output_dtype()
        rpn = layers.Identity(dtype=dtype, name="rpn")(anchor_head(shapes[1:], 1, "rpn_head")([c3, c4]))
        class_logits, box_deltas, mask_logits = roi_heads(shapes[:2], num_classes)([c2, c3, rois])
        outputs = {"rpn": rpn, "roi_classes": layers.Identity(dtype=dtype, name="roi_classes")(class_logits),
                   "roi_boxes": layers.Identity(dtype=dtype, name="roi_boxes")(box_deltas),
                   "roi_masks": layers.Identity(dtype=dtype, name="roi_masks")(mask_logits)}
        return keras.Model({"images": images, "rois": rois}, outputs, name="rcnn")

    @staticmethod
    def losses(num_classes):
        return {"rpn": AnchorLoss(1), "roi_classes": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                "roi_boxes": PositiveBoxLoss(), "roi_masks": MaskLoss()}

    @staticmethod
    def targets(scenes, image_size, num_classes, rng):
        from apps.detect.data import roi_targets

        anchors = box_utils.make_anchors(image_size)
        objects = np.where(scenes["classes"] >= 0, 0, -1)  # the RPN's one class: "an object"
        rpn = box_utils.assign_anchors(anchors, scenes["boxes"], objects)
        rois, labels, deltas, masks = roi_targets(scenes, NUM_ROIS, MASK_SIZE, num_classes, rng)
        x = {"images": scenes["image"], "rois": rois}
        y = {"rpn": rpn, "roi_classes": labels, "roi_boxes": deltas, "roi_masks": masks}
        return x, y

    @staticmethod
    def expand_targets(num_classes):
        """Batch map: compact uint8 RoI masks + labels -> MaskLoss's per-class targets
        (computed per batch: for a whole dataset they would not fit in memory)."""
        def expand(x, y):
            in_class = ops.one_hot(ops.cast(y["roi_classes"], "int32"), num_classes + 1)[..., :num_classes]
            masks = ops.cast(y["roi_masks"], "float32")[..., None]
            y = {**y, "roi_masks": ops.where(in_class[:, :, None, None, :] > 0, masks, -1.0)}
            return x, y
        return expand

    @staticmethod
    def inference(trained, image_size, num_classes, max_detections=MAX_DETECTIONS):
        images = keras.Input((image_size, image_size, 1), name="images")
        c2, c3, c4 = trained.get_layer("backbone")(images)
        rpn = trained.get_layer("rpn_head")([c3, c4])
        anchors = box_utils.make_anchors(image_size)
        proposal_boxes = DecodeBoxes(image_size, anchors, name="decode_proposals")(rpn[..., :4])
        objectness = layers.Activation("sigmoid", name="objectness")(rpn[..., 4:])
        proposals = Detections(NUM_ROIS, iou_threshold=0.7, score_threshold=0.0, name="proposals")(
            proposal_boxes, objectness)
        class_logits, box_deltas, mask_logits = trained.get_layer("roi_heads")([c2, c3, proposals["boxes"]])
        real = ops.cast(proposals["classes"] >= 0, "float32")[..., None]  # padded proposals score 0
        scores = layers.Softmax(name="class_probabilities")(class_logits)[..., :num_classes] * real
        boxes = DecodeBoxes(image_size, name="decode_boxes")(box_deltas, proposals["boxes"])
        detections = Detections(max_detections, iou_threshold=0.5, score_threshold=0.05, name="nms")(boxes, scores)
        roi_masks = SelectMasks(name="select_masks")(mask_logits, detections["indices"], detections["classes"])
        masks = PasteMasks(image_size, name="paste_masks")(roi_masks, detections["boxes"])
        return keras.Model(images, _box_outputs(detections) + [masks], name="rcnn_inference")
