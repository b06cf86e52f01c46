"""Command line: python -m apps.generative {train,evaluate,sample,export,judge,pretrain,quality,
overcomplete,unrolled,pix2pix} ...

Models (--model): ae, conv_ae, linear_ae, sparse_ae, denoising_ae (autoencoders); vae, cvae (variational);
gan, dcgan, cgan, wgan_gp (adversarial); cyclegan (unpaired translation between two classes).
`quality --models all` trains every sampling model at a stated budget and writes the sample-quality table.
Experiments (each writes PNGs under --out/<verb>/ and prints a table; --small for seconds):
overcomplete (an overcomplete AE copies noise unless sparse or denoising), unrolled (unrolled vs plain GAN on
a ring of Gaussians), pix2pix (edges -> Fashion-MNIST item; U-Net + PatchGAN, exported).
"""

import argparse
import os

from core.errors import run_cli

MODEL_NAMES = ("ae", "conv_ae", "linear_ae", "sparse_ae", "denoising_ae", "vae", "cvae", "gan", "dcgan", "cgan",
               "wgan_gp", "cyclegan")


def _domains(text):
    try:
        a, b = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two class numbers like 7,9, got '{text}'") from None
    return a, b


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m apps.generative", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    def add_run(p):
        p.add_argument("--model", default="vae", help="model name (default: %(default)s); sets the default --out")
        p.add_argument("--out", default=None, help="run folder (default: runs/generative/MODEL)")

    p = commands.add_parser("train", help="train a model (rerun the same command to resume)")
    add_run(p)
    p.add_argument("--dataset", default="fashion_mnist", help="fashion_mnist, mnist5k, digits or tfds:NAME")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128, help="batch size per replica (default: %(default)s)")
    p.add_argument("--latent-dim", type=int, default=None, help="latent size (default: per model; VAE 2)")
    p.add_argument("--learning-rate", type=float, default=None, help="default: 1e-3, GANs 2e-4, WGAN-GP 1e-4")
    p.add_argument("--strategy", default="auto", help="auto, default, mirrored or multiworker")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="use at most this many examples per split")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--patience", type=int, default=None)
    p.add_argument("--noise", choices=("gaussian", "masking"), default=None, help="denoising_ae corruption")
    p.add_argument("--noise-level", type=float, default=None, help="Gaussian std or masked share (default 0.3)")
    p.add_argument("--sparsity-target", type=float, default=None, help="sparse_ae target activation ρ (0.05)")
    p.add_argument("--sparsity-weight", type=float, default=None, help="sparse_ae penalty weight β (0.1)")
    p.add_argument("--likelihood", choices=("bernoulli", "gaussian"), default=None, help="VAE decoder likelihood")
    p.add_argument("--kl", choices=("analytic", "sampled"), default=None, help="VAE KL term (tfp)")
    p.add_argument("--gan-loss", choices=("minimax", "non_saturating", "least_squares", "wasserstein"), default=None)
    p.add_argument("--feature-matching", action="store_true", default=None, help="GAN generator on feature matching")
    p.add_argument("--minibatch-discrimination", action="store_true", default=None)
    p.add_argument("--critic-steps", type=int, default=None, help="discriminator steps per generator step")
    p.add_argument("--domains", type=_domains, default=None, help="cyclegan: classes A,B (default 7,9)")
    p.add_argument("--cycle-weight", type=float, default=None, help="cyclegan λ (default 10)")

    p = commands.add_parser("evaluate", help="test metrics, PNGs and judge scores of a run")
    add_run(p)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--num-samples", type=int, default=2000, help="samples for the quality scores")
    p.add_argument("--judge", default=None, help="judge classifier run folder (default: runs/generative/judge_DATASET)")

    p = commands.add_parser("sample", help="a PNG grid of new images")
    add_run(p)
    p.add_argument("--num", type=int, default=64)
    p.add_argument("--label", type=int, default=None, help="class of every sample (conditional models)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--png", default=None, help="output PNG (default: in the run folder)")

    p = commands.add_parser("export", help="decoder/generator to SavedModel + TFLite, parity-checked")
    add_run(p)
    p.add_argument("--export-dir", default="saved_models", help="root of the exports (default: %(default)s)")
    p.add_argument("--version", type=int, default=None)

    p = commands.add_parser("judge", help="train the LeNet-5 that scores sample quality")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--out", default=None, help="default: runs/generative/judge_DATASET")

    p = commands.add_parser("pretrain", help="stacked AE: greedy pre-training, fine-tuning, classifier init")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--limit", type=int, default=None, help="unlabelled training images (and test images)")
    p.add_argument("--labels", type=int, default=500, help="labelled images for the classifier")
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 64], help="hidden layer sizes")
    p.add_argument("--epochs", type=int, default=3, help="epochs per greedy layer")
    p.add_argument("--finetune-epochs", type=int, default=3)
    p.add_argument("--classifier-epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="default: runs/generative/pretrain")

    p = commands.add_parser("quality", help="train every model at a stated budget, score it: Markdown table + PNGs")
    p.add_argument("--models", default="all", help="'all' or comma-separated rows (vae,cvae,gan,gan_minimax,...)")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--num-samples", type=int, default=1000, help="samples (and test images) per score")
    p.add_argument("--judge", default=None, help="judge run folder (default: runs/generative/judge_DATASET)")
    p.add_argument("--limit", type=int, default=None, help="override every row's training images (smoke runs)")
    p.add_argument("--epochs", type=int, default=None, help="override every row's epochs (smoke runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="default: runs/generative/quality")

    def add_experiment(name, help_text):
        p = commands.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--out", default=os.path.join("runs", "generative"),
                       help=f"PNGs go to OUT/{name}/ (default: %(default)s)")
        p.add_argument("--small", action="store_true", help="reduced size: seconds instead of minutes")
        p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
        return p

    add_experiment("overcomplete", "overcomplete autoencoder on 8x8 digits: plain (copies noise too), sparse (L1 on "
                                   "the code) and denoising; filters PNG and error/sparsity table")
    p = add_experiment("unrolled", "unrolled GAN (Metz et al. 2017) vs plain GAN on a ring of 8 Gaussians: "
                                   "samples over training, modes covered")
    p.add_argument("--unroll-steps", type=int, default=5,
                   help="K: discriminator steps the generator looks ahead (default: %(default)s)")
    p.add_argument("--steps", type=int, default=None, help="training steps per model (default 2000, --small 750)")
    p = add_experiment("pix2pix", "pix2pix (Isola et al. 2017): Fashion-MNIST edge map or silhouette -> item, "
                                  "U-Net + conditional PatchGAN vs L1 alone; exports the generator")
    p.add_argument("--condition", choices=("edges", "silhouette"), default="edges",
                   help="the input drawing (default: %(default)s)")
    p.add_argument("--l1-weight", type=float, default=10.0, help="λ of the L1 term (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=2, help="(default: %(default)s)")
    p.add_argument("--limit", type=int, default=None, help="training pairs (default 6000, --small 1600)")
    p.add_argument("--export-dir", default="saved_models",
                   help="the generator goes to EXPORT_DIR/generative/pix2pix/ (default: %(default)s)")
    return parser.parse_args(argv)


def _check_experiment(args):
    from core.errors import UserError

    if args.command == "unrolled":
        if args.unroll_steps < 1:
            raise UserError(f"--unroll-steps must be at least 1 (0 is the plain GAN it is compared with), "
                            f"got {args.unroll_steps}")
        if args.steps is not None and args.steps < 10:
            raise UserError(f"--steps must be at least 10 (samples are drawn every steps/5), got {args.steps}")
    if args.command == "pix2pix":
        if args.epochs < 1:
            raise UserError(f"--epochs must be at least 1, got {args.epochs}")
        if args.limit is not None and args.limit < 64:
            raise UserError(f"--limit must be at least 64 training pairs (two batches), got {args.limit}")
        if not args.l1_weight >= 0:
            raise UserError(f"--l1-weight must be ≥ 0, got {args.l1_weight}")


def run_experiment(args):
    """One of the experiment verbs; returns its results dict."""
    import importlib
    import time

    from core import training

    _check_experiment(args)
    start = time.time()
    training.set_seed(args.seed)
    module = importlib.import_module(f"apps.generative.{args.command}")
    options = {}
    if args.command == "unrolled":
        options = dict(unroll_steps=args.unroll_steps, steps=args.steps)
    elif args.command == "pix2pix":
        options = dict(condition=args.condition, l1_weight=args.l1_weight, epochs=args.epochs, limit=args.limit,
                       export_dir=args.export_dir)
    result = module.run(out=args.out, small=args.small, seed=args.seed, **options)
    print(f"{args.command} finished in {time.time() - start:.0f} s")
    return result


def main(argv=None):
    args = parse_args(argv)
    if args.command in ("overcomplete", "unrolled", "pix2pix"):
        return run_experiment(args)
    if getattr(args, "model", None) not in (None, *MODEL_NAMES):
        from core.errors import UserError

        raise UserError(f"unknown model '{args.model}'; choose one of: {', '.join(sorted(MODEL_NAMES))}")
    from apps.generative import app  # after parsing, so --help is instant

    if args.command == "train":
        options = {k: getattr(args, k) for k in ("noise", "noise_level", "sparsity_target", "sparsity_weight",
                                                 "likelihood", "kl", "gan_loss", "feature_matching",
                                                 "minibatch_discrimination", "critic_steps", "domains",
                                                 "cycle_weight")}
        out = args.out or app.default_out(args.model)
        app.train(model=args.model, dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size,
                  latent_dim=args.latent_dim, learning_rate=args.learning_rate, strategy=args.strategy, out=out,
                  seed=args.seed, limit=args.limit, val_fraction=args.val_fraction, patience=args.patience,
                  **options)
        samples = args.model in ("vae", "cvae", "gan", "dcgan", "cgan", "wgan_gp", "cyclegan")
        print(f"run folder: {out} (model.keras, history.csv, learning_curves.png"
              f"{', samples/epoch_*.png' if samples else ''})")
        print(f"  learning curves: {os.path.join(out, 'learning_curves.png')}")
    elif args.command == "evaluate":
        app.evaluate(out=args.out, model=args.model, limit=args.limit, num_samples=args.num_samples,
                     judge=args.judge)
    elif args.command == "sample":
        app.sample(out=args.out, model=args.model, num=args.num, label=args.label, seed=args.seed, png=args.png)
    elif args.command == "export":
        app.export_run(out=args.out, model=args.model, export_dir=args.export_dir, version=args.version)
    elif args.command == "judge":
        app.judge(dataset=args.dataset, epochs=args.epochs, limit=args.limit, out=args.out)
    elif args.command == "quality":
        from apps.generative import quality_table

        quality_table.run_quality_table(names=quality_table.parse_models(args.models), dataset=args.dataset,
                                        out=args.out or os.path.join(app.ROOT, "quality"), judge=args.judge,
                                        num_samples=args.num_samples, seed=args.seed, limit=args.limit,
                                        epochs=args.epochs)
    elif args.command == "pretrain":
        app.pretrain(dataset=args.dataset, limit=args.limit, labels=args.labels, sizes=args.sizes, epochs=args.epochs,
                     finetune_epochs=args.finetune_epochs, classifier_epochs=args.classifier_epochs, seed=args.seed,
                     out=args.out)


if __name__ == "__main__":
    run_cli(main, prog="apps.generative")
