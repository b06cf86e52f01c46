"""Shared plumbing of the detect app's concept experiments (`localize`, `sliding-window`,
`rcnn-classic`): the scenes they use, output folders and tables, the app's own detectors
trained on the same scenes as a reference, and the cost figures (FLOPs, ms per image).

The experiments run on 64x64 scenes generated in memory (`core.scenes.generate`, no
tensorflow-datasets build): the classic pipelines crop and classify hundreds of boxes per
image, so small canvases keep them at seconds on a CPU.
"""

import tempfile
import time

import numpy as np

from apps.basics import common
from apps.detect.config import TrainConfig
from core import scenes as scene_lib
from core import training

CLASS_NAMES = list(scene_lib.class_names("fashion_mnist"))
# One object per scene (localization) and 1-3 objects (detection; the spec of tests/test_detect_training.py
# and of the tfds config fashion_mnist_64_small).
SINGLE_OBJECT = scene_lib.SceneSpec(size=64, min_objects=1, max_objects=1, min_scale=0.8, max_scale=1.4, clutter=3)
MULTI_OBJECT = scene_lib.SceneSpec(size=64, max_objects=3, min_scale=0.8, max_scale=1.4, clutter=3)


def run_folder(run_dir):
    """The experiment's folder of PNGs, created (a one-line `UserError` when it cannot be written)."""
    return training.make_output_dir(run_dir)


def print_table(title, header, rows):
    """The suite's small fixed-width table (the basics experiments' printer)."""
    common.print_table(title, header, rows)


def make_scenes(spec, counts, seed=0):
    """{split: scenes} with counts[split] scenes of each split (train, validation, test)."""
    return {split: scene_lib.generate(spec, split, count=count, seed=seed) for split, count in counts.items()}


def train_app_detector(model, scenes, *, epochs, batch_size=16, learning_rate=3e-3, seed=0):
    """The app's own detector (`ssd` or `rcnn`) trained by `app.train` on the same scenes, as the
    reference of a comparison; returns (inference model, training seconds). The run folder is
    temporary: this is a yardstick, `python -m apps.detect train` makes runs to keep."""
    from apps.detect import app

    with tempfile.TemporaryDirectory(prefix=f"detect_{model}_") as folder:
        start = time.time()
        app.train(TrainConfig(model=model, dataset="generated scenes", epochs=epochs, batch_size=batch_size,
                              learning_rate=learning_rate, seed=seed), run_dir=folder, class_names=CLASS_NAMES,
                  scenes={k: scenes[k] for k in ("train", "validation")})
        seconds = time.time() - start
        inference, _ = app.inference_model(folder)
    return inference, seconds


def milliseconds_per_image(function, images, repeats=2):
    """Best of `repeats` timed calls of function(images), per image (the first call traces)."""
    function(images[:2])
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        function(images)
        best = min(best, time.perf_counter() - start)
    return 1000.0 * best / len(images)


def count_flops(model):
    """Floating-point operations of one forward pass of one example: 2 x the multiply-adds of
    the Conv2D and Dense layers (nested models included; normalization, activations, pooling
    and NMS are left out: a few per cent at most)."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += count_flops(layer)
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            positions = int(np.prod(layer.output.shape[1:-1])) if len(layer.output.shape) > 2 else 1
            total += 2 * positions * int(np.prod(layer.kernel.shape))
    return total


def draw_box(ax, box, colour, label=None, style="-"):
    """A box [x0, y0, x1, y1) on an imshow axis (pixel centres at integers), with an optional label."""
    from matplotlib import patches

    x0, y0, x1, y1 = box
    ax.add_patch(patches.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=colour,
                                   linewidth=1.2, linestyle=style))
    if label:
        ax.text(x0, y0 - 1.5, label, color=colour, fontsize=6)


def show_detections(ax, scenes, i, detections, min_score=0.5):
    """Scene i with its objects (green, dashed) and the detections scoring at least `min_score` (red)."""
    ax.imshow(scenes["image"][i, ..., 0], cmap="gray", vmin=0, vmax=255)
    for box in scenes["boxes"][i, :int(scenes["num_objects"][i])]:
        draw_box(ax, box, "lime", style="--")
    for box, c, s in zip(detections["boxes"], detections["classes"], detections["scores"]):
        if s >= min_score:
            draw_box(ax, box, "red", f"{CLASS_NAMES[int(c)]} {s:.2f}")
