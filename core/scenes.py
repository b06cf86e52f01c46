"""Multi-object scenes composed from real Fashion-MNIST / MNIST items.

The dense-prediction apps (segment, detect) and image captioning need pictures with
several objects, per-pixel labels, instances and boxes. None ships offline, so this
module composes them from real item images: each scene is a dark canvas with 1..K
items pasted at random positions and scales (later items occlude earlier ones),
plus clutter -- dim fragments of other items that belong to the background.

Everything is deterministic by seed. Training scenes use items from the source's
training images, validation scenes a held-back tenth of them, and test scenes the
source's test images, so no item is seen in two splits.

Labels of one scene (arrays of `generate`, fields of the tfds dataset):
  image          uint8 (S, S, 1)
  semantic       uint8 (S, S)      0 = background, c + 1 = item of class c (visible pixels)
  instances      uint8 (S, S)      0 = background, i + 1 = i-th object (visible pixels)
  boxes          float32 (K, 4)    pixel [x_min, y_min, x_max, y_max] of each whole item
                                   (amodal: occluded parts count), x_max/y_max exclusive
  classes        int32 (K,)        item classes, -1 past `num_objects`
  num_objects    int32

`tfds_builder()` registers these as the tensorflow-datasets dataset `generated_scenes`,
so `load(split)` (or `tfds.load("generated_scenes/fashion_mnist_96")`) serves them.
"""

import dataclasses
import functools
import os

import numpy as np

from core.errors import UserError

FOREGROUND_THRESHOLD = 30   # a resized item pixel above this (of 255) belongs to the item
SOURCES = ("fashion_mnist", "mnist5k")
SPLITS = ("train", "validation", "test")
DEFAULT_DATA_DIR = os.environ.get("SCENES_DATA_DIR", os.path.join("data", "tensorflow_datasets"))


@dataclasses.dataclass(frozen=True)
class SceneSpec:
    size: int = 96                 # canvas side in pixels
    source: str = "fashion_mnist"  # where the items come from
    min_objects: int = 1
    max_objects: int = 4
    min_scale: float = 1.0         # item side = 28 * scale pixels
    max_scale: float = 2.0
    max_iou: float = 0.2           # boxes of two items overlap at most this much
    clutter: int = 6               # dim background fragments per scene
    train: int = 8000              # scenes per split
    validation: int = 1000
    test: int = 1000

    def count(self, split):
        return getattr(self, split)


def class_names(source):
    from core.data import DIGIT_CLASSES, FASHION_MNIST_CLASSES

    return {"fashion_mnist": FASHION_MNIST_CLASSES, "mnist5k": DIGIT_CLASSES}[_check_source(source)]


def _check_source(source):
    if source not in SOURCES:
        raise UserError(f"unknown scene source '{source}'; choose one of {', '.join(SOURCES)}")
    return source


@functools.lru_cache(maxsize=2)
def _source_arrays(source):
    from core.data import load_fashion_mnist_arrays, load_mnist5k_arrays

    loader = {"fashion_mnist": load_fashion_mnist_arrays, "mnist5k": load_mnist5k_arrays}[_check_source(source)]
    return loader()


def item_pool(source, split):
    """The (images (N, 28, 28) uint8, labels (N,)) items a split draws from."""
    (x_train, y_train), (x_test, y_test) = _source_arrays(source)
    if split == "test":
        return x_test[..., 0], y_test.astype(np.int32)
    held_back = len(x_train) // 10
    if split == "validation":
        return x_train[-held_back:, ..., 0], y_train[-held_back:].astype(np.int32)
    if split == "train":
        return x_train[:-held_back, ..., 0], y_train[:-held_back].astype(np.int32)
    raise UserError(f"unknown split '{split}'; choose one of {', '.join(SPLITS)}")


def _resize(item, side):
    from PIL import Image

    return np.asarray(Image.fromarray(item).resize((side, side), Image.BILINEAR))


def _iou(a, b):
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def compose_scene(rng, images, labels, spec):
    """One scene from the item pool; returns the label arrays documented above."""
    size = spec.size
    image = np.zeros((size, size), np.uint8)
    semantic = np.zeros((size, size), np.uint8)
    instances = np.zeros((size, size), np.uint8)
    boxes = np.zeros((spec.max_objects, 4), np.float32)
    classes = np.full((spec.max_objects,), -1, np.int32)

    # Clutter first, so items cover it: a dim crop of a random item, background by label.
    for _ in range(spec.clutter):
        fragment = images[rng.integers(len(images))]
        side = int(rng.integers(6, 12))
        y, x = rng.integers(0, 28 - side, size=2)
        patch = (fragment[y:y + side, x:x + side] * rng.uniform(0.25, 0.6)).astype(np.uint8)
        top, left = rng.integers(0, size - side, size=2)
        region = image[top:top + side, left:left + side]
        np.maximum(region, patch, out=region)

    wanted = int(rng.integers(spec.min_objects, spec.max_objects + 1))
    placed = 0
    for _ in range(wanted * 20):  # rejection sampling of positions that overlap too much
        if placed == wanted:
            break
        index = rng.integers(len(images))
        side = int(round(28 * rng.uniform(spec.min_scale, spec.max_scale)))
        side = min(side, size)
        item = _resize(images[index], side)
        mask = item > FOREGROUND_THRESHOLD
        if not mask.any():
            continue
        rows, cols = np.nonzero(mask)
        top, left = (int(v) for v in rng.integers(0, size - side + 1, size=2))
        box = np.array([left + cols.min(), top + rows.min(), left + cols.max() + 1, top + rows.max() + 1],
                       np.float32)
        if any(_iou(box, other) > spec.max_iou for other in boxes[:placed]):
            continue
        window = (slice(top, top + side), slice(left, left + side))
        image[window][mask] = item[mask]
        semantic[window][mask] = labels[index] + 1
        instances[window][mask] = placed + 1
        boxes[placed], classes[placed] = box, labels[index]
        placed += 1
    return dict(image=image[..., None], semantic=semantic, instances=instances, boxes=boxes, classes=classes,
                num_objects=np.int32(placed))


def generate(spec=SceneSpec(), split="train", *, count=None, seed=0, pool=None):
    """`count` scenes of a split (default: the spec's count) as a dict of stacked arrays."""
    images, labels = pool if pool is not None else item_pool(spec.source, split)
    count = spec.count(split) if count is None else count
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    scenes = [compose_scene(rng, images, labels, spec) for _ in range(count)]
    return {key: np.stack([scene[key] for scene in scenes]) for key in scenes[0]}


def instance_masks(instances, num_objects):
    """(K, S, S) boolean visible masks of the objects of one scene's instance map."""
    return np.stack([instances == i + 1 for i in range(num_objects)]) if num_objects else \
        np.zeros((0,) + instances.shape, bool)


# -- tensorflow-datasets ------------------------------------------------------------------------

_BUILDER = None


def tfds_builder():
    """The registered `generated_scenes` builder class (defined on first use: importing
    tensorflow_datasets is slow, and only the apps that read scenes need it)."""
    global _BUILDER
    if _BUILDER is not None:
        return _BUILDER
    import tensorflow_datasets as tfds

    class ScenesConfig(tfds.core.BuilderConfig):
        def __init__(self, *, spec, **kwargs):
            super().__init__(version="1.0.0", **kwargs)
            self.spec = spec

    class GeneratedScenes(tfds.core.GeneratorBasedBuilder):
        """Fashion-MNIST / MNIST items composed into scenes with masks and boxes (core/scenes.py)."""

        VERSION = tfds.core.Version("1.0.0")
        BUILDER_CONFIGS = [
            ScenesConfig(name="fashion_mnist_96", spec=SceneSpec(), description="Fashion-MNIST items, 96x96"),
            ScenesConfig(name="mnist_96", spec=SceneSpec(source="mnist5k", train=4000, validation=500, test=500),
                         description="MNIST-5k digits, 96x96"),
            ScenesConfig(name="fashion_mnist_64_small",
                         spec=SceneSpec(size=64, max_objects=3, min_scale=0.8, max_scale=1.4, clutter=3,
                                        train=512, validation=128, test=128),
                         description="small and quick: for tests and smoke runs"),
        ]

        def _info(self):
            spec = self.builder_config.spec
            names = list(class_names(spec.source))
            return self.dataset_info_from_configs(
                description=__doc__,
                features=tfds.features.FeaturesDict({
                    # zlib-compressed arrays: PNG-encoding every image through TF ops makes
                    # building ~10x slower, and the pixels are the same.
                    "image": tfds.features.Tensor(shape=(spec.size, spec.size, 1), dtype=np.uint8, encoding="zlib"),
                    "semantic": tfds.features.Tensor(shape=(spec.size, spec.size), dtype=np.uint8, encoding="zlib"),
                    "instances": tfds.features.Tensor(shape=(spec.size, spec.size), dtype=np.uint8, encoding="zlib"),
                    "objects": tfds.features.Sequence({
                        "bbox": tfds.features.BBoxFeature(),   # normalized [y_min, x_min, y_max, x_max]
                        "label": tfds.features.ClassLabel(names=names),
                    }),
                }),
                homepage="https://github.com/zalandoresearch/fashion-mnist",
                disable_shuffling=True,  # example i of a split is scene i of `generate`
            )

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(split) for split in SPLITS}

        def _generate_examples(self, split):
            spec = self.builder_config.spec
            scenes = generate(spec, split)
            for i in range(len(scenes["image"])):
                n = int(scenes["num_objects"][i])
                x0, y0, x1, y1 = (scenes["boxes"][i, :n] / spec.size).T
                yield i, {
                    "image": scenes["image"][i],
                    "semantic": scenes["semantic"][i],
                    "instances": scenes["instances"][i],
                    "objects": {
                        "bbox": np.clip(np.stack([y0, x0, y1, x1], axis=-1), 0.0, 1.0).astype(np.float32),
                        "label": scenes["classes"][i, :n].astype(np.int64),
                    },
                }

    _BUILDER = GeneratedScenes
    return _BUILDER


def builder(config="fashion_mnist_96", data_dir=None):
    """The prepared tfds builder of a config (generated and written on first use)."""
    cls = tfds_builder()
    names = [c.name for c in cls.BUILDER_CONFIGS]
    if config not in names:
        raise UserError(f"unknown scene dataset '{config}'; choose one of {', '.join(names)}")
    instance = cls(config=config, data_dir=data_dir or DEFAULT_DATA_DIR)
    instance.download_and_prepare()
    return instance


def load(split, config="fashion_mnist_96", data_dir=None):
    """`tf.data` of one split's scene dicts (the tfds features above)."""
    if split not in SPLITS:
        raise UserError(f"unknown split '{split}'; choose one of {', '.join(SPLITS)}")
    return builder(config, data_dir).as_dataset(split=split, shuffle_files=False)


def spec_of(config):
    return next(c.spec for c in tfds_builder().BUILDER_CONFIGS if c.name == config)


def preview(scenes, path, count=8, names=None):
    """PNG: scenes (top), their semantic masks (middle) and boxes with class names (bottom)."""
    import matplotlib.pyplot as plt
    from matplotlib import patches

    count = min(count, len(scenes["image"]))
    fig, axes = plt.subplots(2, count, figsize=(2 * count, 4.2), squeeze=False)
    for i in range(count):
        axes[0, i].imshow(scenes["image"][i, ..., 0], cmap="gray", vmin=0, vmax=255)
        axes[1, i].imshow(scenes["semantic"][i], cmap="tab20", vmin=0, vmax=19, interpolation="nearest")
        for k in range(int(scenes["num_objects"][i])):
            x0, y0, x1, y1 = scenes["boxes"][i, k]
            axes[0, i].add_patch(patches.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False,
                                                   edgecolor="lime", linewidth=1))
            label = int(scenes["classes"][i, k])
            axes[0, i].text(x0, y0 - 1, names[label] if names else str(label), color="lime", fontsize=6)
        for ax in axes[:, i]:
            ax.axis("off")
    axes[0, 0].set_title("scenes and boxes", loc="left", fontsize=8)
    axes[1, 0].set_title("semantic masks", loc="left", fontsize=8)
    from core.plots import save_figure

    return save_figure(fig, path)
