"""Command line: python -m apps.segment {train,evaluate,export,predict,preview} ..."""

import argparse
import os

from core.errors import run_cli

MODEL_NAMES = ("fcn", "segnet", "unet")
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
    args = parser.parse_args(argv)
    if getattr(args, "model", None) is not None and args.out is None:
        args.out = default_out(args.model)
    return args


def main(argv=None):
    args = parse_args(argv)
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
