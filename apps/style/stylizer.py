"""The fast feed-forward stylizer for one style (Johnson, Alahi & Fei-Fei 2016): `app.build_stylizer` trained on
random crops of skimage photos with the perceptual losses of `app.losses_of`, so one forward pass stylizes any
image whose sides are multiples of 4.

  train     Adam steps on crops (the global batch split over the replicas of --strategy: each replica's loss
            is its crops' mean divided by the replica count, and the optimizer sums the replicas' gradients, so
            a step is the one-device step on the whole batch); model.keras, config.json, history.json and a PNG
  evaluate  the three losses on crops of photos the stylizer never saw, next to the unstylized crops
  export    SavedModel (images -> stylized, pixels in [0, 255]) and float / dynamic-range TFLite files at a
            fixed 128x128 input, parity-checked: saved_models/style_<model>/<version>/
  predict   stylized PNGs of image files (or of the run's content image)
"""

import json
import os

import keras
import numpy as np
import tensorflow as tf

import layers  # noqa: F401  (registers ResidualBlock, so a run's model.keras loads in a fresh process)
from apps.style.app import (
    APP,
    _fit,
    _stem,
    build_stylizer,
    center_crop,
    load_image,
    loss_weights,
    losses_of,
    style_targets,
    subpixel_twin,
)
from apps.style.config import MODELS, StylizerConfig
from apps.style.features import build_extractor
from core import distribute, export, plots, precision, results, training
from core.cli import run_config
from core.errors import UserError

TRAINING_PHOTOS = ("astronaut", "coffee", "rocket", "retina", "colorwheel", "coins", "camera", "hubble_deep_field")
HELD_OUT_PHOTOS = ("chelsea", "brick", "grass", "gravel")  # evaluate: photos the stylizer never trained on
PREVIEW_SIZE = 128  # the PNG of train, the export's fixed input


def training_crops(count, size, seed=0, photos=TRAINING_PHOTOS):
    """Random crops of skimage photos (the content images the stylizer learns on)."""
    rng = np.random.default_rng(seed)
    sources = [load_image(p, size * 2) for p in photos]
    crops = []
    for i in range(count):
        image = sources[i % len(sources)]
        top = rng.integers(0, image.shape[0] - size + 1)
        left = rng.integers(0, image.shape[1] - size + 1)
        crops.append(image[top:top + size, left:left + size])
    return np.stack(crops).astype(np.float32)


def check_config(config, replicas):
    if config.batch_size % replicas:
        raise UserError(f"--batch-size {config.batch_size} does not split over the {replicas} replicas")


def batches(crops, config):
    """The global batches of all steps, in a fixed order (the same crops whatever the strategy)."""
    picks = np.random.default_rng(config.seed).integers(0, len(crops), config.steps * config.batch_size)
    table = tf.constant(crops)
    return tf.data.Dataset.from_tensor_slices(picks).map(lambda i: tf.gather(table, i)).batch(config.batch_size)


def train(config: StylizerConfig, *, run, strategy="default", log_every=50):
    """Train the stylizer for `config.style`; the run folder gets model.keras, config.json, history.json, a PNG."""
    c = config
    distribution = distribute.get_strategy(strategy)
    replicas = distribution.num_replicas_in_sync
    check_config(c, replicas)
    keras.utils.set_random_seed(c.seed)
    style_image = center_crop(load_image(c.style, c.size), c.size)
    crops = training_crops(max(64, c.batch_size * 16), c.size, c.seed)
    with distribution.scope():
        extractor = build_extractor(c.features, c.weights, c.seed)  # float32: the losses' fixed yardstick
        with precision.policy(c.precision):
            net = build_stylizer()
        optimizer = keras.optimizers.Adam(c.learning_rate)
        optimizer.build(net.trainable_variables)  # its slots mirrored now, not first made inside a replica's step
    style_features = style_targets(extractor, style_image)
    weights = loss_weights(c)
    training.save_config(run, run_config(c, APP, strategy=strategy, replicas=replicas, features_name=extractor.name),
                         identity_keys=("model", "style", "features"))

    def replica_step(batch):
        content_features = extractor(batch)
        with tf.GradientTape() as tape:
            parts = losses_of(extractor, net(batch, training=True), content_features, style_features, weights)
            total = parts["content"] + parts["style"] + parts["tv"]
            share = total / replicas  # the optimizer sums the replicas' gradients
        grads = tape.gradient(share, net.trainable_weights)
        optimizer.apply_gradients(zip(grads, net.trainable_weights))
        return total, parts

    @tf.function(jit_compile=bool(c.jit) and replicas == 1)  # XLA cannot compile a step that spans replicas
    def step(batch):
        total, parts = distribution.run(replica_step, args=(batch,))
        mean = tf.distribute.ReduceOp.MEAN
        return (distribution.reduce(mean, total, axis=None),
                {k: distribution.reduce(mean, v, axis=None) for k, v in parts.items()})

    history = []
    print(f"training a fast stylizer for '{c.style}' ({extractor.name} features, {c.steps} steps of {c.batch_size} "
          f"{c.size}x{c.size} crops, {replicas} replica(s))")
    for i, batch in enumerate(distribution.experimental_distribute_dataset(batches(crops, c)), start=1):
        total, parts = step(batch)
        if i == 1 or i % log_every == 0 or i == c.steps:
            history.append({"step": i, **{k: float(v) for k, v in parts.items()}})
            print(f"  step {i:4d}: total {float(total):9.3f}  " + "  ".join(
                f"{k} {float(v):8.3f}" for k, v in parts.items()))
    net.save(os.path.join(run, training.MODEL_FILE))
    with open(os.path.join(run, "history.json"), "w") as f:
        json.dump(history, f, indent=2)
    test = center_crop(load_image(c.content, PREVIEW_SIZE), PREVIEW_SIZE)
    stylized = net(test[None]).numpy()[0]
    png = plots.image_grid(np.stack([_fit(style_image, stylized.shape), test, stylized]) / 255.0,
                           [f"style '{c.style}'", f"content '{c.content}'", "fast stylizer output"],
                           os.path.join(run, "stylized.png"), columns=3,
                           title=f"feed-forward stylizer ({c.steps} steps), one forward pass")
    print(f"wrote {png}")
    return {"model": net, "png": png, "history": history}


def load_run(run):
    """(config, trained stylizer) of a run folder; a folder of another app or model names --run."""
    config = training.load_config(run)
    if config.get("_app") != APP or config.get("model") not in MODELS:
        raise UserError(f"{run} is not a stylizer run (no 'model': 'fast' of apps.style in its config.json); "
                        f"give --run the folder of a 'python -m apps.style train' run")
    return config, training.load_trained_model(run, input_shape=(None, None, 3))


def evaluate(*, run, count=8):
    """The losses of the stylized held-out crops next to those of the crops themselves (no stylization)."""
    config, net = load_run(run)
    size = config["size"]
    extractor = build_extractor(config["features"], config["weights"], config["seed"])
    style_features = style_targets(extractor, center_crop(load_image(config["style"], size), size))
    crops = tf.constant(training_crops(count, size, seed=config["seed"] + 1, photos=HELD_OUT_PHOTOS))
    weights = {"content": config["content_weight"], "style": config["style_weight"], "tv": config["tv_weight"]}
    content_features = extractor(crops)
    report = {}
    for name, images in (("stylized", net(crops)), ("unstylized", crops)):
        parts = losses_of(extractor, images, content_features, style_features, weights)
        report[name] = {k: float(v) for k, v in parts.items()}
    print(f"held-out crops ({count} of {', '.join(HELD_OUT_PHOTOS)}, {size}x{size}): style loss "
          f"{report['stylized']['style']:.3f} stylized vs {report['unstylized']['style']:.3f} unstylized; content "
          f"loss {report['stylized']['content']:.3f} (0 unstylized)")
    with open(os.path.join(run, "metrics.json"), "w") as f:
        json.dump(report, f, indent=2)
    results.write_results(run, app="style", model=config["model"],
                          dataset=f"held-out crops of {', '.join(HELD_OUT_PHOTOS)}",
                          metrics={f"stylized_{k}_loss": v for k, v in report["stylized"].items()},
                          baselines={f"unstylized_{k}_loss": v for k, v in report["unstylized"].items()},
                          budget=results.budget_of(config), seed=config.get("seed"))
    return report


# int8's rule: TOLERANCES["int8"] is a share of an output's range (probabilities in [0, 1]); for pixels in
# [0, 255] that share is this many grey levels, which every pixel must keep (measured on the 30-step test
# stylizer: 2.3 at most, 0.5 on average).
INT8_TOLERANCE = export.TOLERANCES["int8"] * 255


def export_run(*, run, export_dir="saved_models", version=None, kinds=("float", "dynamic")):
    """Writes saved_models/style_<model>/<version>/ and its TFLite files (+ int8, calibrated on training crops),
    at a fixed 128x128 input."""
    config, net = load_run(run)
    sample = center_crop(load_image(config["content"], PREVIEW_SIZE), PREVIEW_SIZE)[None]
    calibration = training_crops(8, PREVIEW_SIZE, seed=config["seed"])  # photos of the training set
    # The same function at a fixed input size (TFLite wants static shapes here), upsampling by sub-pixel
    # convolutions, which XNNPACK runs whole.
    fixed_net = subpixel_twin(net, sample.shape[1:])

    def parity(kind, reference, candidate):
        # Pixels are in [0, 255]: the float file must stay under one grey level
        # everywhere; dynamic-range weights visibly shift colours, so they are measured only;
        # int8 must keep every pixel within INT8_TOLERANCE grey levels.
        difference = export.max_abs_difference(reference, candidate)
        mean = float(np.abs(reference["stylized"].astype(np.float64) - candidate["stylized"]).mean())
        figures = {"max_abs_diff": difference, "mean_abs_diff": mean}
        if not np.isfinite(difference):
            return figures, f"by {difference}"
        if kind == "float" and difference > 1.0:
            return figures, f"by {difference:.3g} of 255"
        if kind == "int8" and difference > INT8_TOLERANCE:
            return figures, f"by {difference:.3g} of 255 (tolerance {INT8_TOLERANCE:.3g})"
        return figures, None

    report = export.export_model(fixed_net, export.export_folder(APP, config["model"], export_dir),
                                 input_names=["images"], output_names=["stylized"], sample_inputs={"images": sample},
                                 representative_data=np.split(calibration.astype(np.float32), 4),
                                 version=version, kinds=kinds, check=parity)
    for kind, path in report["tflite"].items():
        print(f"wrote TFLite {path} (max |difference| vs SavedModel {report['max_abs_diff'][kind]:.3g} of 255, "
              f"mean {report['parity'][kind]['mean_abs_diff']:.3g})")
    print(f"wrote SavedModel {report['saved_model']} (serving_default: images -> stylized)")
    return report


def predict(images=(), *, run, size=PREVIEW_SIZE):
    """Stylized PNGs of `images` (files or skimage photo names; none: the run's content image) in the run folder,
    shorter side `size`, cropped to multiples of 4."""
    config, net = load_run(run)
    paths = []
    for name in images or [config["content"]]:
        image = load_image(name, size)
        height, width = (image.shape[0] // 4) * 4, (image.shape[1] // 4) * 4
        stylized = net(image[None, :height, :width]).numpy()[0]
        from PIL import Image

        path = os.path.join(run, f"stylized_{_stem(name)}.png")
        Image.fromarray(stylized.round().clip(0, 255).astype(np.uint8)).save(path)
        print(f"wrote {path}")
        paths.append(path)
    return paths
