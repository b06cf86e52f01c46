"""Command line: python -m apps.generative {train,evaluate,export,sample,judge,pretrain,quality,
overcomplete,unrolled,pix2pix} ...

Models (--model): ae, conv_ae, linear_ae, sparse_ae, denoising_ae (autoencoders); vae, cvae (variational);
gan, dcgan, cgan, wgan_gp (adversarial); cyclegan (unpaired translation between two classes).
Every verb works in a run folder, --run DIR (default runs/generative/<model>, or runs/generative/<verb>).
`quality --models all` trains every sampling model at a stated budget and writes the sample-quality table.
Experiments (each writes PNGs into --run and prints a table; --small for seconds):
overcomplete (an overcomplete AE copies noise unless sparse or denoising), unrolled (unrolled vs plain GAN on
a ring of Gaussians), pix2pix (edges -> Fashion-MNIST item; U-Net + PatchGAN, exported).
"""

import argparse
import os

from apps.generative.config import MODEL_NAMES, TrainConfig, with_model_defaults
from core.cli import (
    RUNS,
    add_config_flags,
    add_run_flags,
    add_trained_run_flags,
    resolve_config,
    run_folder,
    trained_run_folder,
)
from core.errors import UserError, run_cli

APP = "generative"
DEFAULT_MODEL = TrainConfig.model
EXPERIMENTS = ("overcomplete", "unrolled", "pix2pix")


class _ShowDefaults(argparse.HelpFormatter):
    """Each flag's default in its help, unless the help already says it (the config flags do; a `None`
    default's help says what "none" means)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if not action.option_strings or action.default is argparse.SUPPRESS or "default" in text or "none:" in text:
            return text
        if action.default is None:
            return text + " (default: none)"
        return text if action.default is False else text + " (default: %(default)s)"


def _verb(commands, name, help_text, aliases=()):
    return commands.add_parser(name, help=help_text, description=help_text, formatter_class=_ShowDefaults,
                               aliases=list(aliases))


def _add_folder(p, name, seed=True):
    """--run DIR (default runs/generative/<name>) and --seed, for the app's own verbs."""
    p.add_argument("--run", default=os.path.join(RUNS, APP, name), metavar="DIR", help="the run folder")
    if seed:
        p.add_argument("--seed", type=int, default=0, help="random seed, an integer ≥ 0")


def _add_experiments(commands):
    for name, text in (("overcomplete", "overcomplete autoencoder on 8x8 digits: plain (copies noise too), sparse "
                                        "(L1 on the code) and denoising; filters PNG and error/sparsity table"),
                       ("unrolled", "unrolled GAN (Metz et al. 2017) vs plain GAN on a ring of 8 Gaussians: "
                                    "samples over training, modes covered"),
                       ("pix2pix", "pix2pix (Isola et al. 2017): Fashion-MNIST edge map or silhouette -> item, "
                                   "U-Net + conditional PatchGAN vs L1 alone; exports the generator to "
                                   "saved_models/generative_pix2pix/")):
        p = _verb(commands, name, text)
        _add_folder(p, name)
        p.add_argument("--small", action="store_true", help="reduced size: seconds instead of minutes")
        if name == "unrolled":
            p.add_argument("--unroll-steps", type=int, default=5,
                           help="K: discriminator steps the generator looks ahead")
            p.add_argument("--steps", type=int, default=None, help="training steps per model (none: 2000, "
                                                                   "--small 750)")
        if name == "pix2pix":
            p.add_argument("--condition", choices=("edges", "silhouette"), default="edges", help="the input drawing")
            p.add_argument("--l1-weight", type=float, default=10.0, help="λ of the L1 term")
            p.add_argument("--epochs", type=int, default=2, help="passes over the training pairs")
            p.add_argument("--limit", type=int, default=None, help="training pairs (none: 6000, --small 1600)")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m apps.generative", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    p = _verb(commands, "train", "train a model (rerun the same command to resume)")
    add_config_flags(p, TrainConfig)
    add_run_flags(p, app=APP)

    p = _verb(commands, "evaluate", "test metrics, PNGs and judge scores of a run")
    add_trained_run_flags(p, app=APP, models=MODEL_NAMES, default_model=DEFAULT_MODEL)
    p.add_argument("--limit", type=int, default=None, help="test images (none: the run's --limit)")
    p.add_argument("--num-samples", type=int, default=2000, help="samples for the quality scores")
    p.add_argument("--judge", default=None, metavar="DIR",
                   help="judge classifier run folder (none: runs/generative/judge_DATASET)")

    p = _verb(commands, "export", "decoder/generator to saved_models/generative_<model>/ (SavedModel + TFLite, "
                                  "parity-checked)")
    add_trained_run_flags(p, app=APP, models=MODEL_NAMES, default_model=DEFAULT_MODEL)
    p.add_argument("--version", type=int, default=None, help="version number (none: the next free one)")

    # `predict` in the app contract: what a generative model predicts is new images
    p = _verb(commands, "sample", "a PNG grid of new images, written into the run folder", aliases=("predict",))
    add_trained_run_flags(p, app=APP, models=MODEL_NAMES, default_model=DEFAULT_MODEL)
    p.add_argument("--num", type=int, default=64, help="images")
    p.add_argument("--label", type=int, default=None, help="class of every sample (conditional models)")
    p.add_argument("--seed", type=int, default=0, help="random seed, an integer ≥ 0")

    p = _verb(commands, "judge", "train the LeNet-5 that scores sample quality")
    p.add_argument("--dataset", default="fashion_mnist", help="the dataset whose samples it judges")
    p.add_argument("--epochs", type=int, default=3, help="passes over the training images")
    p.add_argument("--limit", type=int, default=None, help="use at most this many examples per split")
    p.add_argument("--run", default=None, metavar="DIR", help="the run folder (none: runs/generative/judge_DATASET)")
    p.add_argument("--seed", type=int, default=0, help="random seed, an integer ≥ 0")

    p = _verb(commands, "pretrain", "stacked AE: greedy pre-training, fine-tuning, classifier init")
    _add_folder(p, "pretrain")
    p.add_argument("--dataset", default="fashion_mnist", help="fashion_mnist, mnist5k, digits or tfds:NAME")
    p.add_argument("--limit", type=int, default=None, help="unlabelled training images (and test images)")
    p.add_argument("--labels", type=int, default=500, help="labelled images for the classifier")
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 64], help="hidden layer sizes")
    p.add_argument("--epochs", type=int, default=3, help="epochs per greedy layer")
    p.add_argument("--finetune-epochs", type=int, default=3, help="epochs of fine-tuning the stack")
    p.add_argument("--classifier-epochs", type=int, default=30, help="epochs of the classifier")

    p = _verb(commands, "quality", "train every model at a stated budget, score it: Markdown table + PNGs")
    _add_folder(p, "quality")
    p.add_argument("--models", default="all", help="'all' or comma-separated rows (vae,cvae,gan,gan_minimax,...)")
    p.add_argument("--dataset", default="fashion_mnist", help="fashion_mnist, mnist5k, digits or tfds:NAME")
    p.add_argument("--num-samples", type=int, default=1000, help="samples (and test images) per score")
    p.add_argument("--judge", default=None, metavar="DIR",
                   help="judge run folder (none: runs/generative/judge_DATASET)")
    p.add_argument("--limit", type=int, default=None, help="override every row's training images (smoke runs)")
    p.add_argument("--epochs", type=int, default=None, help="override every row's epochs (smoke runs)")

    _add_experiments(commands)
    args = parser.parse_args(argv)
    _check_numbers(args)
    return args


def _check_numbers(args):
    """Numbers the verbs cannot use are the user's to fix: one line each (the train flags are checked by their
    config, `core.cli.resolve_config`)."""
    at_least = dict(seed=0, num=1, num_samples=1, epochs=1, limit=1, labels=1, finetune_epochs=0,
                    classifier_epochs=1, version=1, unroll_steps=1, steps=10)
    if args.command == "pix2pix":
        at_least["limit"] = 64  # two batches
    if args.command == "train":
        return
    for name, minimum in at_least.items():
        value = getattr(args, name, None)
        if value is not None and value < minimum:
            why = {"unroll_steps": " (0 is the plain GAN it is compared with)",
                   "steps": " (samples are drawn every steps/5)", "limit": ""}.get(name, "")
            raise UserError(f"--{name.replace('_', '-')} must be at least {minimum}{why}, got {value}")
    if not getattr(args, "l1_weight", 0) >= 0:
        raise UserError(f"--l1-weight must be ≥ 0, got {args.l1_weight}")


def run_experiment(args):
    """One of the experiment verbs; returns its results dict."""
    import importlib
    import time

    from core import training

    start = time.time()
    training.set_seed(args.seed)
    module = importlib.import_module(f"apps.generative.{args.command}")
    options = {}
    if args.command == "unrolled":
        options = dict(unroll_steps=args.unroll_steps, steps=args.steps)
    elif args.command == "pix2pix":
        options = dict(condition=args.condition, l1_weight=args.l1_weight, epochs=args.epochs, limit=args.limit)
    result = module.run(folder=args.run, small=args.small, seed=args.seed, **options)
    print(f"{args.command} finished in {time.time() - start:.0f} s")
    return result


def train(args):
    config = with_model_defaults(resolve_config(TrainConfig, args))  # a bad value is one line before TF loads
    from apps.generative import app  # after parsing, so --help is instant

    run = run_folder(APP, config.model, args.run)
    app.train(config, run=run, strategy=args.strategy)
    samples = config.model not in ("ae", "conv_ae", "linear_ae", "sparse_ae", "denoising_ae")
    print(f"run folder: {run} (config.json, model.keras, history.csv, learning_curves.png"
          f"{', samples/epoch_*.png' if samples else ''}); next: python -m apps.generative evaluate --run {run}")
    print(f"  learning curves: {os.path.join(run, 'learning_curves.png')}")


def main(argv=None):
    args = parse_args(argv)
    if args.command == "train":
        return train(args)
    if args.command == "predict":
        args.command = "sample"
    if args.command in EXPERIMENTS:
        return run_experiment(args)
    from apps.generative import app  # after parsing, so --help is instant

    if args.command in ("evaluate", "sample", "export"):
        run = trained_run_folder(APP, args, DEFAULT_MODEL)  # --run, else runs/generative/<--model>
    if args.command == "evaluate":
        return app.evaluate(run, limit=args.limit, num_samples=args.num_samples, judge=args.judge)
    if args.command == "sample":
        return app.sample(run, num=args.num, label=args.label, seed=args.seed)
    if args.command == "export":
        return app.export_run(run, version=args.version)
    if args.command == "judge":
        return app.judge(dataset=args.dataset, epochs=args.epochs, limit=args.limit, run=args.run, seed=args.seed)
    if args.command == "quality":
        from apps.generative import quality_table

        return quality_table.run_quality_table(names=quality_table.parse_models(args.models), dataset=args.dataset,
                                               out=args.run, judge=args.judge, num_samples=args.num_samples,
                                               seed=args.seed, limit=args.limit, epochs=args.epochs)
    return app.pretrain(dataset=args.dataset, limit=args.limit, labels=args.labels, sizes=args.sizes,
                        epochs=args.epochs, finetune_epochs=args.finetune_epochs,
                        classifier_epochs=args.classifier_epochs, seed=args.seed, run=args.run)


if __name__ == "__main__":
    run_cli(main, prog="apps.generative")
