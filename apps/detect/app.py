"""Object detection on generated scenes: train, evaluate, export, predict.

The story: scenes (core/scenes.py, served by tensorflow-datasets) -> targets of the
chosen detector (apps/detect/data.py) -> `core.training.fit` -> an inference model
with NMS and fixed-size outputs (apps/detect/models.py) -> COCO-style mAP against
a random-boxes baseline (apps/detect/metrics.py) -> SavedModel + TFLite with a
parity check -> PNGs with boxes, labels, scores and masks.
"""

import dataclasses
import json
import os

import keras
import numpy as np

from apps.detect import boxes as box_utils
from apps.detect.config import APP, MODEL_BUDGETS, TrainConfig
from apps.detect.data import detector_dataset, ground_truths, load_scenes, with_mirrors
from apps.detect.metrics import detection_metrics
from apps.detect.models import MODELS
from core import distribute, export, precision, results, training
from core import scenes as scene_lib
from core.cli import run_config
from core.errors import UserError
from core.images import read_image

# Float TFLite vs SavedModel: the same detections (count, classes) and boxes (pixels),
# scores and mask probabilities within this.
FLOAT_TOLERANCE = 1e-3


def dataset_classes(dataset):
    return list(scene_lib.class_names(scene_lib.spec_of(dataset).source))


def _check_dataset(dataset):
    names = [c.name for c in scene_lib.tfds_builder().BUILDER_CONFIGS]
    if dataset not in names:
        raise UserError(f"unknown scene dataset '{dataset}'; choose one of {', '.join(names)}")


def train(config: TrainConfig, *, run_dir, strategy="auto", scenes=None, class_names=None):
    """Train `config.model` into `run_dir`; `config.batch_size` is per replica. `scenes` ({"train": ...,
    "validation": ...} numpy scene dicts) and `class_names` replace loading `config.dataset` (tests and the
    experiments use small generated sets)."""
    detector = MODELS.get(config.model)  # an unknown name fails now, not after loading the data
    budget = MODEL_BUDGETS[config.model]  # config.json records the numbers
    config = dataclasses.replace(config, epochs=config.epochs or budget["epochs"],
                                 mirror=budget["mirror"] if config.mirror is None else config.mirror)
    if scenes is None:
        _check_dataset(config.dataset)
    strategy_name, strategy = strategy, distribute.get_strategy(strategy)  # before any other TF work
    training.set_seed(config.seed)
    if scenes is None:
        class_names = dataset_classes(config.dataset)
        scenes = {split: load_scenes(config.dataset, split, config.limit, config.data_dir)
                  for split in ("train", "validation")}
    if config.mirror:
        scenes = {**scenes, "train": with_mirrors(scenes["train"])}
    image_size, num_classes = scenes["train"]["image"].shape[1], len(class_names)
    global_batch = distribute.global_batch_size(config.batch_size, strategy)
    with strategy.scope(), precision.policy(config.precision):
        net = detector.build(image_size, num_classes)  # float32 outputs (models.OUTPUT_DTYPE)
        # Clipping keeps the first steps sane while the focal loss sees mostly easy negatives.
        net.compile(optimizer=keras.optimizers.Adam(config.learning_rate, global_clipnorm=10.0),
                    loss=detector.losses(num_classes), jit_compile=precision.xla(config.jit))
    recorded = run_config(config, APP, class_names=list(class_names), image_size=int(image_size),
                          strategy=strategy_name, replicas=strategy.num_replicas_in_sync)
    writes_files = training.start_run(run_dir, recorded, strategy, dataset_name=config.dataset,
                                      num_examples=len(scenes["train"]["image"]), global_batch=global_batch)
    train_data = detector_dataset(detector, scenes["train"], num_classes, global_batch, shuffle=True,
                                  seed=config.seed)
    val_data = detector_dataset(detector, scenes["validation"], num_classes, global_batch, seed=config.seed + 1)
    training.fit(net, train_data, val_data, epochs=config.epochs, run_dir=run_dir, writes_files=writes_files)
    return net


def inference_model(run_dir):
    """The run's best model wrapped with decoding, NMS and (rcnn) mask pasting; and the config."""
    config = training.load_config(run_dir)
    trained = training.load_trained_model(run_dir, input_shape=(config["image_size"], config["image_size"], 1))
    detector = MODELS.get(config["model"])
    return detector.inference(trained, config["image_size"], len(config["class_names"])), config


def detect(inference, images, batch_size=64):
    """Run the inference model; per image a dict boxes, classes, scores (and masks), valid ones only."""
    outputs = inference.predict(np.asarray(images, np.float32), batch_size=batch_size, verbose=0)
    names = ("boxes", "classes", "scores", "num_detections", "masks")
    outputs = dict(zip(names, outputs))
    result = []
    for i, n in enumerate(outputs["num_detections"]):
        n = int(n)
        item = {key: outputs[key][i, :n] for key in ("boxes", "classes", "scores", "masks") if key in outputs}
        result.append(item)
    return result


def random_baseline(scenes, num_classes, seed=0, per_image=10):
    """Detections of the trivial baseline: per image `per_image` boxes of the objects'
    sizes at random places, random classes and scores."""
    rng = np.random.default_rng(seed)
    size = scenes["image"].shape[1]
    return [{"boxes": box_utils.random_boxes(rng, per_image, size, scenes["boxes"][scenes["classes"] >= 0]),
             "classes": rng.integers(num_classes, size=per_image), "scores": rng.uniform(size=per_image)}
            for _ in range(len(scenes["image"]))]


def score(inference, scenes, num_classes):
    """mAP@0.5 and mAP@[.5:.95] of a detector on scenes, and the detections."""
    detections = detect(inference, scenes["image"])
    return detection_metrics(detections, ground_truths(scenes), num_classes), detections


def mask_iou(detections, scenes, threshold=0.5):
    """Mean IoU of predicted masks (probability >= 0.5) with the visible mask of the object
    their box matches best (box IoU >= threshold, same class); unmatched detections skipped."""
    ious = []
    for det, i in zip(detections, range(len(scenes["image"]))):
        n = int(scenes["num_objects"][i])
        if not n or not len(det["boxes"]):
            continue
        box_iou = box_utils.iou_matrix(det["boxes"], scenes["boxes"][i, :n])
        truth = scene_lib.instance_masks(scenes["instances"][i], n)
        for d, row in enumerate(box_iou):
            k = int(row.argmax())
            if row[k] >= threshold and det["classes"][d] == scenes["classes"][i, k]:
                predicted = det["masks"][d] >= 0.5
                union = (predicted | truth[k]).sum()
                ious.append((predicted & truth[k]).sum() / union if union else 1.0)
    return float(np.mean(ious)) if ious else 0.0


def evaluate(run_dir, *, limit=None, scenes=None):
    """mAP of the run's detector on the test scenes vs the random-boxes baseline; PNG of predictions."""
    inference, config = inference_model(run_dir)
    class_names = config["class_names"]
    if scenes is None:
        scenes = load_scenes(config["dataset"], "test", limit, config.get("data_dir"))
    metrics, detections = score(inference, scenes, len(class_names))
    baseline = detection_metrics(random_baseline(scenes, len(class_names)), ground_truths(scenes), len(class_names))
    report = {"model": config["model"], "dataset": config["dataset"], "num_scenes": len(scenes["image"]),
              "map50": metrics["map50"], "map50_95": metrics["map50_95"],
              "ap50_per_class": dict(zip(class_names, metrics["ap50_per_class"])),
              "random_boxes_map50": baseline["map50"], "random_boxes_map50_95": baseline["map50_95"]}
    if results.training_seconds(run_dir) is not None:  # fit's TrainingClock, summed over resumed runs
        report["training_seconds"] = results.training_seconds(run_dir)
    if "masks" in detections[0]:
        report["mask_iou"] = mask_iou(detections, scenes)
    print(f"{config['model']} on {config['dataset']} test ({report['num_scenes']} scenes): "
          f"mAP@0.5 {report['map50']:.3f}, mAP@[.5:.95] {report['map50_95']:.3f}; "
          f"random boxes: {report['random_boxes_map50']:.3f}, {report['random_boxes_map50_95']:.3f}"
          + (f"; mask IoU of matched detections {report['mask_iou']:.3f}" if "mask_iou" in report else ""))
    for name, ap in report["ap50_per_class"].items():
        print(f"  AP@0.5 {name:>12}: {'n/a' if ap is None else f'{ap:.3f}'}")
    with open(os.path.join(run_dir, "metrics.json"), "w") as f:
        json.dump(report, f, indent=2)
    png = draw(scenes["image"][:8], detections[:8], class_names, os.path.join(run_dir, "test_predictions.png"),
               title=f"{config['model']}: mAP@0.5 {report['map50']:.3f}")
    results_path = results.write_results(
        run_dir, app="detect", model=config["model"], dataset=config["dataset"],
        metrics={k: report[k] for k in ("map50", "map50_95", "mask_iou") if k in report},
        baselines={k: report[k] for k in ("random_boxes_map50", "random_boxes_map50_95")},
        budget=results.budget_of(config),
        seed=config.get("seed"))
    print(f"wrote {png}\nwrote {os.path.join(run_dir, 'metrics.json')}\nwrote {results_path}")
    return report


def export_run(run_dir, *, export_dir="saved_models", version=None, sample_images=None):
    """SavedModel (serving_default: images -> post-NMS boxes, classes, scores, num_detections
    [, masks]) in EXPORT_DIR/detect_<model>/<version>/ and float + dynamic-range TFLite files,
    checked against the SavedModel on the same test scenes. No int8 file: it converts, but LiteRT cannot
    run it (a division in the post-NMS loop gets an int8 divisor of zero; docs/deployment.md, "int8")."""
    inference, config = inference_model(run_dir)
    detector = MODELS.get(config["model"])
    if sample_images is None:
        sample_images = load_scenes(config["dataset"], "test", 16, config.get("data_dir"))["image"]
    sample = {"images": np.asarray(sample_images, np.float32)}
    report = export.export_model(inference, export.export_folder(APP, config["model"], export_dir),
                                 input_names=["images"], output_names=list(detector.output_names),
                                 sample_inputs=sample, class_names=config["class_names"], version=version,
                                 check=parity)
    print(f"wrote SavedModel {report['saved_model']} (signature '{export.SIGNATURE}': images -> "
          f"{', '.join(detector.output_names)})")
    for kind, path in report["tflite"].items():
        p = report["parity"][kind]
        print(f"wrote TFLite {path} ({os.path.getsize(path) / 1024:.0f} KiB; vs SavedModel on {len(sample_images)} "
              f"scenes: same detections {p['same_detections']}, max |difference| {p['max_abs_diff']:.2g})")
    return report


def parity(kind, reference, candidate):
    """export.export_model's check for post-NMS outputs: the same detections (counts
    and classes) and the largest difference of boxes, scores (and masks) where both
    are valid. The float file must match within FLOAT_TOLERANCE; a dynamic-range
    file may legitimately reorder near-tied detections, so it is measured only."""
    same = bool(np.array_equal(reference["num_detections"], candidate["num_detections"])
                and np.array_equal(reference["classes"], candidate["classes"]))
    diff = 0.0
    if same:
        diff = max(float(np.max(np.abs(reference[k].astype(np.float64) - candidate[k]), initial=0.0))
                   for k in ("boxes", "scores", "masks") if k in reference)
    figures = {"same_detections": same, "max_abs_diff": diff if same else float("inf")}
    problem = None
    if kind == "float" and (not same or diff > FLOAT_TOLERANCE):
        problem = f"in its detections: {figures}"
    return figures, problem


def predict(paths, *, run_dir, resize=False):
    """Detect objects in image files; writes RUN/predictions/<name>.png with boxes, labels,
    scores (and masks) and prints the detections."""
    inference, config = inference_model(run_dir)
    shape = (config["image_size"], config["image_size"], 1)
    images = np.stack([read_image(p, shape, resize, what="detector") for p in paths])
    detections = detect(inference, images)
    folder = training.make_output_dir(os.path.join(run_dir, "predictions"))
    written = []
    for path, image, det in zip(paths, images, detections):
        found = ", ".join(f"{config['class_names'][c]} {s:.2f} at [{', '.join(f'{v:.0f}' for v in b)}]"
                          for b, c, s in zip(det["boxes"], det["classes"], det["scores"]))
        print(f"{path}: {found or 'nothing found'}")
        png = os.path.join(folder, os.path.splitext(os.path.basename(path))[0] + ".png")
        written.append(draw(image[None], [det], config["class_names"], png))
        print(f"wrote {png}")
    return detections, written


def draw(images, detections, class_names, path, title=None, columns=4, min_score=0.25):
    """PNG: each image with its detections' masks (tinted), boxes, class names and scores
    (those scoring at least `min_score`: the low-score tail counts for mAP but hides the picture)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import patches

    from core.plots import save_figure

    count = len(images)
    columns = min(columns, count)
    rows = -(-count // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3 * rows), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, det in zip(axes.ravel(), images, detections):
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
        for k, (box, cls, score) in enumerate(zip(det["boxes"], det["classes"], det["scores"])):
            if score < min_score:
                continue
            colour = colours(int(cls) % 10)
            if "masks" in det:
                tint = np.zeros(det["masks"][k].shape + (4,))
                tint[..., :3] = colour[:3]
                tint[..., 3] = 0.45 * (det["masks"][k] >= 0.5)
                ax.imshow(tint)
            x0, y0, x1, y1 = box
            ax.add_patch(patches.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=colour,
                                           linewidth=1.2))
            ax.text(x0, y0 - 1.5, f"{class_names[int(cls)]} {score:.2f}", color=colour, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)
