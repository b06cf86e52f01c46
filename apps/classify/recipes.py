"""The training tricks, each one a named, testable piece the CLI switches on.

  optimizers      sgd, momentum, nesterov, adagrad, rmsprop, adam, amsgrad
  schedules       constant, step, cosine -- each with an optional linear warm-up
  initializers    xavier (Glorot uniform), he (He normal) for every kernel
  weight decay    L1 / L2 penalties on every kernel, added to the loss
  targets         one-hot labels, label smoothing in the loss, class weights
  augmentation    keras-cv flips, crops, RandAugment, mixup, cutmix on tf.data batches
  imbalance       an imbalanced training set on purpose; over/under-sampling
"""

import math

import keras
import numpy as np
import tensorflow as tf

from apps.classify.config import AUGMENTATIONS, CLASS_WEIGHTS, INITIALIZERS, OPTIMIZERS, RESAMPLING, SCHEDULES
from core.errors import UserError


def check_choice(kind, value, choices):
    if value not in choices:
        raise UserError(f"unknown {kind} '{value}'; choose one of: {', '.join(choices)}")
    return value


def check_options(o):
    """Fail early, before any data is loaded, on a misspelt choice."""
    check_choice("optimizer", o["optimizer"], OPTIMIZERS)
    check_choice("learning-rate schedule", o["lr_schedule"], SCHEDULES)
    check_choice("initializer", o["init"], INITIALIZERS)
    check_choice("resampling", o["resample"], RESAMPLING)
    check_choice("class weighting", o["class_weight"], CLASS_WEIGHTS)
    parse_augment(o["augment"])
    if o["imbalance"] is not None and not 0.0 < o["imbalance"] <= 1.0:
        raise UserError(f"--imbalance must be in (0, 1], got {o['imbalance']}")
    if not 0.0 <= o["label_smoothing"] < 1.0:
        raise UserError(f"--label-smoothing must be in [0, 1), got {o['label_smoothing']}")
    for key in ("dropout", "dropconnect"):
        if o[key] is not None and not 0.0 <= o[key] < 1.0:
            raise UserError(f"--{key} must be in [0, 1), got {o[key]}")


# --------------------------------------------------------------------------
# Optimizers and learning-rate schedules.


def make_optimizer(name, learning_rate, momentum=0.9):
    """The optimizer `name`; `learning_rate` is a float or a schedule."""
    check_choice("optimizer", name, OPTIMIZERS)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate)
    if name in ("momentum", "nesterov"):
        return keras.optimizers.SGD(learning_rate, momentum=momentum, nesterov=name == "nesterov")
    if name == "adagrad":
        return keras.optimizers.Adagrad(learning_rate)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate)
    return keras.optimizers.Adam(learning_rate, amsgrad=name == "amsgrad")


@keras.saving.register_keras_serializable(package="classify")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Learning rate at optimizer step k (k = 0 for the first update):

      warm-up   k < W:  base * (k + 1) / W
      then t = k - W, T = total_steps - W:
      constant  base
      step      base * gamma ** floor(t / step_size)
      cosine    base * (1 + cos(pi * min(t, T) / T)) / 2
    """

    def __init__(self, base, kind="constant", total_steps=1, warmup_steps=0, step_size=1, gamma=0.1):
        self.base, self.kind = float(base), check_choice("learning-rate schedule", kind, SCHEDULES)
        self.total_steps, self.warmup_steps = int(total_steps), int(warmup_steps)
        self.step_size, self.gamma = max(1, int(step_size)), float(gamma)

    def __call__(self, step):
        k = keras.ops.cast(step, "float32")
        t = keras.ops.maximum(k - self.warmup_steps, 0.0)
        if self.kind == "step":
            lr = self.base * self.gamma ** keras.ops.floor(t / self.step_size)
        elif self.kind == "cosine":
            span = float(max(1, self.total_steps - self.warmup_steps))
            lr = self.base * 0.5 * (1.0 + keras.ops.cos(math.pi * keras.ops.minimum(t, span) / span))
        else:
            lr = self.base + 0.0 * t
        if self.warmup_steps:
            lr = keras.ops.where(k < self.warmup_steps, self.base * (k + 1.0) / self.warmup_steps, lr)
        return lr

    def get_config(self):
        return dict(base=self.base, kind=self.kind, total_steps=self.total_steps, warmup_steps=self.warmup_steps,
                    step_size=self.step_size, gamma=self.gamma)


# --------------------------------------------------------------------------
# Initializers and weight decay, applied to every kernel of a built model
# (the blocks in layers/ included).


def _kernels(model):
    return [v for v in model.trainable_weights if v.name == "kernel" and len(v.shape) >= 2]


def apply_initializer(model, name, seed=0):
    """Re-draw every kernel: xavier = Glorot uniform U(±sqrt(6/(fan_in+fan_out))),
    he = He normal N(0, 2/fan_in) truncated at 2 sigma; biases stay 0."""
    check_choice("initializer", name, INITIALIZERS)
    if name == "default":
        return model
    for i, variable in enumerate(_kernels(model)):
        init = (keras.initializers.GlorotUniform if name == "xavier" else keras.initializers.HeNormal)(seed + i)
        variable.assign(init(variable.shape, dtype=variable.dtype))
    return model


def apply_weight_decay(model, l1=0.0, l2=0.0):
    """Add l1 * sum|w| + l2 * sum w^2 over every kernel to the training loss."""
    if l1 or l2:
        regularizer = keras.regularizers.L1L2(l1=l1, l2=l2)
        for variable in _kernels(model):
            variable.regularizer = regularizer
    return model


# --------------------------------------------------------------------------
# Imbalanced data: make it, then fix it.


def imbalanced_counts(counts, ratio):
    """Per-class counts after `--imbalance ratio`: class c keeps
    floor(n_c * ratio ** (c / (K - 1))) examples (at least 1): class 0 all of
    them, the last class a share `ratio`, an exponential profile between."""
    if not 0.0 < ratio <= 1.0:
        raise UserError(f"--imbalance must be in (0, 1], got {ratio}")
    k = len(counts)
    return np.array([max(1, int(math.floor(n * ratio ** (c / max(1, k - 1)) + 1e-9))) for c, n in enumerate(counts)])


def class_weights(labels, num_classes):
    """'Balanced' class weights w_c = N / (K * n_c) (sklearn's formula): the
    weighted classes contribute equally to the loss; 0 for absent classes."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 0.0)


def rebalance_indices(labels, num_classes, *, imbalance=None, resample="none", seed=0):
    """Indices into the training set: the first examples of each class as
    `imbalanced_counts` says, then over-sampling (each class drawn with
    replacement up to the largest count) or under-sampling (each class cut to
    the smallest count at random)."""
    check_choice("resampling", resample, RESAMPLING)
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(labels == c) for c in range(num_classes)]
    if imbalance is not None:
        keep = imbalanced_counts([len(i) for i in by_class], imbalance)
        by_class = [i[:n] for i, n in zip(by_class, keep)]
    present = [i for i in by_class if len(i)]
    if resample == "over":
        target = max(len(i) for i in present)
        by_class = [np.concatenate([i, rng.choice(i, target - len(i), replace=True)]) if len(i) else i
                    for i in by_class]
    elif resample == "under":
        target = min(len(i) for i in present)
        by_class = [np.sort(rng.choice(i, target, replace=False)) if len(i) else i for i in by_class]
    order = np.concatenate(by_class)
    return order[rng.permutation(len(order))]


def rebalance(dataset, num_classes, *, imbalance=None, resample="none", seed=0):
    """The training pipeline after `rebalance_indices` (held in memory), and its size."""
    x, y = [], []
    for images, labels in dataset.batch(4096).as_numpy_iterator():
        x.append(images)
        y.append(labels)
    x, y = np.concatenate(x), np.concatenate(y)
    order = rebalance_indices(y, num_classes, imbalance=imbalance, resample=resample, seed=seed)
    return tf.data.Dataset.from_tensor_slices((x[order], y[order])), len(order)


# --------------------------------------------------------------------------
# Targets and augmentation, per batch on the tf.data pipeline.


def parse_augment(spec):
    names = [s.strip() for s in (spec or "").split(",") if s.strip()]
    for name in names:
        check_choice("augmentation", name, AUGMENTATIONS)
    return names


def make_augmenter(names, image_shape, seed=0, crop_padding=4, randaugment_magnitude=0.3):
    """A function (images, one_hot_labels) -> (images, labels) on a batch, with
    keras-cv layers: flip (horizontal), crop (zero-pad by `crop_padding` then
    a random crop back to the size), RandAugment (2 ops per image; gray images
    go through it as 3 equal channels), then mixup or cutmix (one of the two,
    at random per batch, when both are named)."""
    import keras_cv

    height, width, channels = image_shape
    geometric = []
    if "flip" in names:
        geometric.append(keras_cv.layers.RandomFlip("horizontal", seed=seed))
    if "crop" in names:
        geometric.append(keras_cv.layers.RandomCrop(height, width, seed=seed + 1))
    randaugment = None
    if "randaugment" in names:
        randaugment = keras_cv.layers.RandAugment(value_range=(0, 255), augmentations_per_image=2,
                                                  magnitude=randaugment_magnitude, seed=seed + 2)
    mixers = []
    if "mixup" in names:
        mixers.append(keras_cv.layers.MixUp(seed=seed + 3))
    if "cutmix" in names:
        mixers.append(keras_cv.layers.CutMix(seed=seed + 4))

    def augment(images, labels):
        for layer in geometric:
            if isinstance(layer, keras_cv.layers.RandomCrop):
                p = crop_padding
                images = tf.pad(images, [[0, 0], [p, p], [p, p], [0, 0]])
            images = layer(images, training=True)
        if randaugment is not None:
            rgb = tf.tile(images, [1, 1, 1, 3]) if channels == 1 else images
            rgb = randaugment(rgb, training=True)
            images = tf.reduce_mean(rgb, axis=-1, keepdims=True) if channels == 1 else rgb
        if mixers:
            mixed = [lambda m=m: m({"images": images, "labels": labels}, training=True) for m in mixers]
            if len(mixed) == 1:
                out = mixed[0]()
            else:
                out = tf.cond(tf.random.uniform(()) < 0.5, mixed[0], mixed[1])
            images, labels = out["images"], out["labels"]
        images = tf.ensure_shape(tf.cast(images, tf.float32), (None, height, width, channels))
        return images, tf.cast(labels, tf.float32)

    return augment


# Multi-task learning: the coarse category of each Fashion-MNIST class.
COARSE_CLASSES = ("top", "bottom", "footwear", "bag")
FASHION_COARSE = (0, 1, 0, 0, 0, 2, 0, 2, 3, 2)  # T-shirt, Trouser, Pullover, Dress, Coat, Sandal, Shirt, ...


def coarse_matrix(fine_to_coarse, num_coarse):
    """M with M[f, c] = 1 when fine class f belongs to coarse class c: coarse
    targets are fine targets @ M (soft labels after mixup stay consistent)."""
    return np.eye(num_coarse, dtype=np.float32)[list(fine_to_coarse)]


def make_batch_fn(num_classes, output_names, *, augment=None, weights=None, coarse=None):
    """Batch (images, int labels) -> (images, targets[, sample weights]):
    one-hot targets (soft after mixup/cutmix), one per model output (outputs
    named coarse_* get targets @ `coarse`, see `coarse_matrix`), and
    per-example weights sum_c y_c w_c when class weights are given."""
    weight_vector = None if weights is None else tf.constant(weights, tf.float32)
    coarse = None if coarse is None else tf.constant(coarse, tf.float32)

    def fn(images, labels):
        targets = tf.one_hot(labels, num_classes)
        if augment is not None:
            images, targets = augment(images, targets)
        if len(output_names) > 1:
            targets_out = {name: tf.matmul(targets, coarse) if name.startswith("coarse") else targets
                           for name in output_names}
        else:
            targets_out = targets
        if weight_vector is None:
            return images, targets_out
        return images, targets_out, tf.reduce_sum(targets * weight_vector, axis=-1)

    return fn
