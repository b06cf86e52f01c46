"""Generative and unsupervised models: train, evaluate, sample, export.

The story, top to bottom:
  train     pick the strategy, load the dataset, build and compile the model
            inside the strategy's scope, fit with checkpoints that resume
            after a kill. Autoencoders and VAEs keep the best model on the
            validation loss; GANs keep the last epoch and write a PNG grid of
            samples from fixed latents after each.
  evaluate  reconstruction error / ELBO / NLL on the test split, the
            model's PNGs, and sample-quality scores from the judge
            classifier (`judge` trains it).
  sample    a PNG grid of new images from the decoder or generator.
  export    the decoder / generator (latent [+ label] -> image) as a
            SavedModel and TFLite files, parity-checked.
  pretrain  the stacked-autoencoder pre-training experiment.

What differs between the families (autoencoders, VAEs, GANs, CycleGAN) is
the model's own business: each answers `compile_for_run`, `fit_data`,
`epoch_figures`, `evaluation_figures`, `judge_scores`, `sampler` and
`serving_model` (see figures.py), and its `train_step` does the rest.

The concept experiments live in their own modules, each with `run(folder=, small=, seed=)`:
overcomplete.py (overcomplete autoencoders), unrolled.py (unrolled GAN), pix2pix.py (edges -> item).
"""

import json
import os

import numpy as np

from apps.generative import figures
from apps.generative.common import arrays
from apps.generative.config import TrainConfig, with_model_defaults
from apps.generative.models import FAMILY, MODELS
from core import data, distribute, export, plots, precision, results, training
from core.cli import config_dict, run_config, run_folder
from core.errors import UserError

APP = "generative"
ROOT = os.path.join("runs", APP)


def family_of(net):
    """The object that answers the family methods: the model itself, or an autoencoder's wrapper (the
    autoencoders are plain functional models, saved as such)."""
    from apps.generative import autoencoders

    return net if hasattr(net, "evaluation_figures") else autoencoders.Autoencoder(net)


# --------------------------------------------------------------------------
# train


def train(config: TrainConfig, *, run=None, strategy="auto", callbacks=()):
    """Train `config.model` on `config.dataset` (`batch_size` per replica) into the run folder `run` (default
    runs/generative/<model>); returns the model. `callbacks`: extra Keras callbacks for `fit`."""
    if config.precision == "mixed_float16" and FAMILY[config.model] != "autoencoder":
        raise UserError(f"--precision mixed_float16: the {config.model}'s own train_step does not scale its loss, "
                        f"so float16 gradients would underflow; use mixed_bfloat16 (it needs no loss scaling)")
    strategy = distribute.get_strategy(strategy)  # before any TF work
    config = with_model_defaults(config)
    out = run_folder(APP, config.model, run)
    training.set_seed(config.seed)
    images = data.load_dataset(config.dataset, val_fraction=config.val_fraction, seed=config.seed, limit=config.limit)
    global_batch = distribute.global_batch_size(config.batch_size, strategy)
    with strategy.scope(), precision.policy(config.precision):
        net = MODELS.get(config.model)(images.image_shape, images.num_classes, config_dict(config))
        family = family_of(net)
        family.compile_for_run(config.learning_rate)
        if config.jit is not None:  # XLA for the train_step or not; none: what each family's compile chose
            net.jit_compile = config.jit
    train_batches, val_batches, fit_options = family.fit_data(images, config, global_batch)  # checks --domains
    recorded = run_config(config, APP, family=FAMILY[config.model], class_names=list(images.class_names),
                          image_shape=list(images.image_shape), strategy=type(strategy).__name__,
                          replicas=strategy.num_replicas_in_sync)
    writes_files = training.start_run(out, recorded, strategy, dataset_name=images.name,
                                      num_examples=images.num_train, global_batch=global_batch)
    callbacks = list(callbacks)
    epoch_figures = family.epoch_figures(os.path.join(out, "samples"), images, config) if writes_files else None
    if epoch_figures is not None:
        callbacks.append(epoch_figures)
    training.fit(net, train_batches, val_batches, epochs=config.epochs, run_dir=out, patience=config.patience,
                 writes_files=writes_files, extra_callbacks=callbacks, **fit_options)
    return net


# --------------------------------------------------------------------------
# Loading a run and its generator.


def load_run(out):
    """(config, model) of the run in folder `out`."""
    from apps.generative import autoencoders, cyclegan, gan, vae  # noqa: F401  (register the custom classes)

    config = training.load_config(out)
    net = training.load_trained_model(out)
    _check_family(net, config, out)
    if config["family"] in ("vae", "cyclegan") and not getattr(net, "compiled", False):
        # `evaluate` runs their test_step; the optimizer state is not needed for that.
        family_of(net).compile_for_run(config["learning_rate"])
    return config, net


def _check_family(net, config, out):
    """Refuse a model.keras that is not of the family config.json names (a file of another run)."""
    from apps.generative import cyclegan, gan, vae

    family = config["family"]
    kinds = {"vae": vae.VAE, "gan": gan.GAN, "cyclegan": cyclegan.CycleGAN}
    if family in kinds:
        fits = isinstance(net, kinds[family])
    else:  # an autoencoder: a functional model whose decoder samples
        fits = any(layer.name == "decoder" for layer in getattr(net, "layers", []))
    if not fits:
        raise UserError(f"{os.path.join(out, training.MODEL_FILE)} holds a {type(net).__name__} "
                        f"'{net.name}', not the {config['model']} ({family}) that {training.CONFIG_FILE} names: "
                        f"the model belongs to another run; pass the right --run DIR or train again")


def generator_of(config, net):
    """(model latent [+ labels] -> image in [0, 1], conditional?) for a run, or (None, False) for CycleGAN."""
    return family_of(net).sampler()


def generate(config, net, num, labels=None, seed=0):
    """`num` new images and the labels used (None if unconditional); see `figures.generate`."""
    return figures.generate(family_of(net), config, num, labels, seed)


def _test_arrays(config, limit=None):
    images = data.load_dataset(config["dataset"], val_fraction=config["val_fraction"], seed=config["seed"],
                               limit=limit or config.get("limit"))
    return images, *arrays(images.test)


# --------------------------------------------------------------------------
# evaluate


def evaluate(run, *, limit=None, num_samples=2000, judge=None):
    """Evaluate the run in folder `run` on the test split; writes PNGs and metrics.json; returns the metrics."""
    config, net = load_run(run)
    images, x_test, y_test = _test_arrays(config, limit)
    metrics = family_of(net).evaluation_figures(config, images, x_test, y_test, run)
    metrics.update(_quality(config, net, x_test, y_test, num_samples, judge))
    with open(os.path.join(run, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    figures.say(os.path.join(run, "metrics.json"))
    figures.say(results.write_results(
        run, app="generative", model=config["model"], dataset=config["dataset"],
        metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
        budget=results.budget_of(config), seed=config.get("seed")))
    return metrics


def _quality(config, net, x_test, y_test, num_samples, judge):
    """Judge scores of the model's samples (empty when no judge is trained)."""
    from apps.generative import quality

    directory = judge or quality.judge_dir(config["dataset"])
    if not os.path.exists(os.path.join(directory, training.MODEL_FILE)):
        print(f"note: no judge classifier in {directory}; run 'python -m apps.generative judge "
              f"--dataset {config['dataset']}' for the Fréchet distance, Inception-style score and mode coverage")
        return {}
    return family_of(net).judge_scores(config, quality.load_judge(directory), x_test, y_test, num_samples)


# --------------------------------------------------------------------------
# sample, export, judge, pretrain


def sample(run, *, num=64, label=None, seed=0):
    """A PNG grid of `num` new images of the run in folder `run` (of class `label` if conditional)."""
    config, net = load_run(run)
    if label is not None and not generator_of(config, net)[1]:
        raise UserError(f"--label: {config['model']} is not conditional (cvae and cgan are)")
    if label is not None and not 0 <= label < len(config["class_names"]):
        raise UserError(f"--label must be one of 0..{len(config['class_names']) - 1}, got {label}")
    labels = None if label is None else np.full(num, label, np.int32)
    images, used = generate(config, net, num, labels, seed)
    titles = [config["class_names"][i] for i in used] if used is not None else [""] * num
    path = plots.image_grid(images, titles, os.path.join(run, f"samples_seed{seed}.png"),
                            title=f"{config['model']} samples (seed {seed})")
    figures.say(path)
    return path


def export_run(run, *, export_root="saved_models", version=None):
    """Export the decoder / generator of the run in folder `run` (latent [+ labels] -> images in [0, 1]), or
    CycleGAN's A -> B translator, to saved_models/generative_<model>/<version>/."""
    config, net = load_run(run)
    model, inputs, output = family_of(net).serving_model(config, lambda: _test_arrays(config)[1:])
    report = export.export_model(model, export.export_folder(APP, config["model"], export_root),
                                 input_names=list(inputs), output_names=[output], sample_inputs=inputs,
                                 representative_data=calibration_batches(config, inputs), version=version)
    print(f"wrote SavedModel {report['saved_model']} (signature '{export.SIGNATURE}': "
          f"{' + '.join(inputs)} -> {output})")
    for kind, path in report["tflite"].items():
        print(f"wrote TFLite {path} ({os.path.getsize(path) / 1024:.0f} KiB, "
              f"max |difference| vs SavedModel {report['max_abs_diff'][kind]:.2g})")
    return report


def calibration_batches(config, inputs, batches=4):
    """int8's calibration data, the kind of the export's `inputs`: other latents drawn from N(0, I) (with the
    same int32 labels, every class) for a decoder or generator, other test images for CycleGAN's translator.
    The int8 file is then held to core.export's default rule: every pixel (in [0, 1]) within TOLERANCES["int8"]."""
    if "latent" in inputs:
        rng = np.random.default_rng(1)
        return [{**inputs, "latent": rng.standard_normal(inputs["latent"].shape).astype(np.float32)}
                for _ in range(batches)]
    images = _test_arrays(config)[1]
    images = images[len(inputs["images"]):] if len(images) > len(inputs["images"]) else images
    return [{"images": batch} for batch in np.array_split(images[:16 * batches], batches) if len(batch)]


def judge(*, dataset="fashion_mnist", epochs=3, limit=None, run=None, seed=0):
    from apps.generative import quality

    directory, report = quality.train_judge(dataset, run=run, epochs=epochs, limit=limit, seed=seed)
    print(f"judge classifier in {directory} (test accuracy {report['accuracy']:.4f})")
    return directory


def pretrain(*, dataset="fashion_mnist", limit=None, labels=500, sizes=(256, 64), epochs=3, finetune_epochs=3,
             classifier_epochs=30, seed=0, run=None):
    """The stacked-autoencoder pre-training experiment; writes metrics.json and the first layer's filters PNG."""
    from apps.generative import autoencoders

    out = run or os.path.join(ROOT, "pretrain")
    training.set_seed(seed)
    images = data.load_dataset(dataset, seed=seed, limit=limit)
    x_train, y_train = arrays(images.train)
    x_test, y_test = arrays(images.test)
    if labels > len(x_train):
        raise UserError(f"--labels {labels} is more than the {len(x_train)} training images")
    report = autoencoders.pretraining_experiment(
        x_train, x_train[:labels], y_train[:labels], x_test, y_test, images.num_classes, sizes=tuple(sizes),
        epochs=epochs, finetune_epochs=finetune_epochs, classifier_epochs=classifier_epochs, seed=seed)
    report.update(dataset=dataset, labels=labels, unlabelled=len(x_train), sizes=list(sizes))
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(f"with {labels} labels: pre-trained init {report['accuracy_pretrained']:.4f}, "
          f"random init {report['accuracy_random_init']:.4f} test accuracy")
    figures.say(os.path.join(out, "metrics.json"))
    return report
