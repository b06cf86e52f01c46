"""Command line: python -m apps.segment {train,evaluate,export,predict,preview,sliding-window,crf} ..."""

import argparse
import os

from core.errors import UserError, run_cli

MODEL_NAMES = ("fcn", "segnet", "unet", "dilated")
LOSS_NAMES = ("crossentropy", "dice", "both")
DEFAULT_MODEL = "unet"


def default_out(model):
    return os.path.join("runs", "segment", model)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m apps.segment", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def add_run_options(p):
        p.add_argument("--model", default=DEFAULT_MODEL,
                       help=f"{', '.join(MODEL_NAMES)}; names the default run folder (default: %(default)s)")
        p.add_argument("--out", default=None, help="run folder (default: runs/segment/MODEL)")
        p.add_argument("--data-dir", default=None,
                       help="tensorflow-datasets folder of the scenes (default: data/tensorflow_datasets)")

    p = commands.add_parser("train", help="train a model (rerun the same command to resume)")
    add_run_options(p)
    p.add_argument("--loss", default="crossentropy", help=f"{', '.join(LOSS_NAMES)} (default: %(default)s)")
    p.add_argument("--dataset", default="fashion_mnist_96",
                   help="scene config: fashion_mnist_96, mnist_96, fashion_mnist_64_small (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=2, help="total epochs (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=16, help="batch size per replica (default: %(default)s)")
    p.add_argument("--learning-rate", type=float, default=2e-3)
    p.add_argument("--limit", type=int, default=800,
                   help="training scenes (validation: a quarter as many); 0 = all (default: %(default)s)")
    p.add_argument("--strategy", default="auto", help="auto, default, mirrored or multiworker")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--patience", type=int, default=None, help="early stopping on the validation loss")

    p = commands.add_parser("evaluate", help="pixel accuracy, mean pixel accuracy, per-class IoU and mIoU on the "
                                             "test scenes, vs all-background; confusion-matrix and overlay PNGs")
    add_run_options(p)
    p.add_argument("--limit", type=int, default=None, help="evaluate on at most this many test scenes")

    p = commands.add_parser("export", help="SavedModel + float/dynamic TFLite, parity-checked")
    add_run_options(p)
    p.add_argument("--export-dir", default="saved_models", help="root of the exports (default: %(default)s)")
    p.add_argument("--version", type=int, default=None, help="version number (default: next free)")

    p = commands.add_parser("predict", help="colour-coded mask overlays of PNG/JPEG files, or of test scenes")
    add_run_options(p)
    p.add_argument("images", nargs="*", help="image files (none: the first --count test scenes, with truth)")
    p.add_argument("--count", type=int, default=8, help="test scenes to show when no files are given")
    p.add_argument("--saved-model", default=None, help="use this exported version folder instead of the run")
    p.add_argument("--resize", action="store_true", help="resize images to the model's input size")
    p.add_argument("--png", default=None, help="where to write the overlays (default: OUT/predictions.png)")

    p = commands.add_parser("preview", help="scenes, masks and boxes of a dataset split as a PNG")
    p.add_argument("--dataset", default="fashion_mnist_96")
    p.add_argument("--split", default="train", help="train, validation or test (default: %(default)s)")
    p.add_argument("--count", type=int, default=8)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--png", default=None, help="default: runs/segment/preview_DATASET_SPLIT.png")

    p = commands.add_parser("sliding-window", help="sliding-window patch classifier vs the FCN at the same training "
                                                   "budget: mIoU, FLOPs and ms per scene; the patch net run "
                                                   "convolutionally gives the same logits")
    p.add_argument("--out", default=os.path.join("runs", "segment", "sliding_window"),
                   help="folder of the PNG (default: %(default)s)")
    p.add_argument("--small", action="store_true", help="64x64 scenes, 40 steps: seconds, not minutes")
    p.add_argument("--steps", type=int, default=None, help="Adam steps of each model (default: 200, 40 with --small)")
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")

    p = commands.add_parser("crf", help="dense-CRF (mean field) refinement of an FCN's masks: mIoU before/after")
    p.add_argument("--run", default=None, help="a training run folder (train ... --out DIR) whose model to refine "
                                               "(default: none, train a quick FCN first)")
    p.add_argument("--out", default=os.path.join("runs", "segment", "crf"),
                   help="folder of the PNG (default: %(default)s)")
    p.add_argument("--small", action="store_true", help="64x64 scenes, fewer of them: seconds, not minutes")
    p.add_argument("--scenes", type=int, default=None, help="validation scenes, half to pick the appearance "
                                                            "weight w_a, half to report (default: 32, 8 with --small)")
    p.add_argument("--iterations", type=int, default=5, help="mean-field iterations (default: %(default)s)")
    p.add_argument("--theta-alpha", type=float, default=8.0,
                   help="appearance kernel: position scale in pixels (default: %(default)s)")
    p.add_argument("--theta-beta", type=float, default=30.0,
                   help="appearance kernel: intensity scale, of 255 (default: %(default)s)")
    p.add_argument("--smoothness-weight", type=float, default=1.0,
                   help="w_s, the smoothness kernel's weight (default: %(default)s)")
    p.add_argument("--theta-gamma", type=float, default=1.5,
                   help="smoothness kernel: position scale in pixels (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    args = parser.parse_args(argv)
    check_concept_options(args)
    if getattr(args, "model", None) is not None and args.out is None:
        args.out = default_out(args.model)
    return args


def check_concept_options(args):
    """Numbers the experiments cannot use are the user's to fix: one line each."""
    for option in ("steps", "iterations", "scenes"):
        if getattr(args, option, None) is not None and getattr(args, option) < 1:
            raise UserError(f"--{option} must be at least 1, got {getattr(args, option)}")
    for option in ("theta_alpha", "theta_beta", "theta_gamma"):
        if getattr(args, option, None) is not None and not getattr(args, option) > 0:
            raise UserError(f"--{option.replace('_', '-')} must be positive, got {getattr(args, option)}")
    if getattr(args, "smoothness_weight", 0) < 0:
        raise UserError(f"--smoothness-weight must be at least 0, got {args.smoothness_weight}")


def main(argv=None):
    args = parse_args(argv)
    if args.command == "sliding-window":
        from apps.segment import sliding_window

        sliding_window.run(out=args.out, small=args.small, seed=args.seed, steps=args.steps)
        return
    if args.command == "crf":
        from apps.segment import crf

        params = crf.CRFParams(theta_alpha=args.theta_alpha, theta_beta=args.theta_beta,
                               smoothness_weight=args.smoothness_weight, theta_gamma=args.theta_gamma,
                               iterations=args.iterations)
        crf.run(out=args.out, small=args.small, seed=args.seed, run_dir=args.run, scenes_count=args.scenes,
                params=params)
        return
    from apps.segment import app  # after parsing, so --help is instant

    if args.command == "train":
        app.train(model=args.model, loss=args.loss, dataset=args.dataset, data_dir=args.data_dir,
                  epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                  strategy=args.strategy, out=args.out, seed=args.seed, limit=args.limit or None,
                  patience=args.patience)
        print(f"run folder: {args.out} (model.keras, history.csv, learning_curves.png, logs/); "
              f"next: python -m apps.segment evaluate --out {args.out}")
    elif args.command == "evaluate":
        app.evaluate(out=args.out, limit=args.limit, data_dir=args.data_dir)
    elif args.command == "export":
        app.export_run(out=args.out, export_dir=args.export_dir, version=args.version, data_dir=args.data_dir)
    elif args.command == "predict":
        app.predict(args.images, out=args.out, saved_model=args.saved_model, resize=args.resize, count=args.count,
                    data_dir=args.data_dir, png=args.png)
    elif args.command == "preview":
        app.preview(dataset=args.dataset, split=args.split, count=args.count, data_dir=args.data_dir, png=args.png)


if __name__ == "__main__":
    run_cli(main, prog="apps.segment")
