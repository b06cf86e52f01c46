"""Command line: python -m apps.classify {train,evaluate,export,predict,demo} ..."""

import argparse
import os
import time

from core.errors import run_cli

DEFAULT_OUT = os.path.join("runs", "classify")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m apps.classify", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def add_train_options(p, epochs):
        p.add_argument("--model", default="resnet", help="model name: mlp, lenet5, resnet (default: %(default)s)")
        p.add_argument("--dataset", default="fashion_mnist",
                       help="fashion_mnist, mnist5k, digits, or tfds:NAME (default: %(default)s)")
        p.add_argument("--epochs", type=int, default=epochs, help="total epochs (default: %(default)s)")
        p.add_argument("--batch-size", type=int, default=128, help="batch size per replica (default: %(default)s)")
        p.add_argument("--learning-rate", type=float, default=1e-3)
        p.add_argument("--strategy", default="auto", help="auto, default, mirrored or multiworker")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--limit", type=int, default=None, help="use at most this many examples per split")
        p.add_argument("--val-fraction", type=float, default=0.1,
                       help="share of the training data held out for validation")
        p.add_argument("--patience", type=int, default=None, help="early-stopping patience in epochs")

    for name, help_text, epochs in [("train", "train a model (rerun the same command to resume)", 5),
                                    ("demo", "train, evaluate and export the default model", 3)]:
        p = commands.add_parser(name, help=help_text)
        add_train_options(p, epochs)
        p.add_argument("--out", default=DEFAULT_OUT, help="run folder (default: %(default)s)")
        if name == "demo":
            p.add_argument("--export-dir", default="saved_models")

    p = commands.add_parser("evaluate", help="test accuracy, per-class precision/recall, confusion matrix PNG")
    p.add_argument("--out", default=DEFAULT_OUT, help="run folder (default: %(default)s)")
    p.add_argument("--limit", type=int, default=None)

    p = commands.add_parser("export", help="SavedModel for TF Serving and TFLite files, parity-checked")
    p.add_argument("--out", default=DEFAULT_OUT, help="run folder (default: %(default)s)")
    p.add_argument("--export-dir", default="saved_models", help="root of the exports (default: %(default)s)")
    p.add_argument("--version", type=int, default=None, help="version number (default: next free)")

    p = commands.add_parser("predict", help="classify PNG/JPEG files")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--out", default=DEFAULT_OUT, help="run folder (default: %(default)s)")
    p.add_argument("--saved-model", default=None, help="use this exported version folder instead of the run")
    p.add_argument("--resize", action="store_true", help="resize images to the model's input size")
    p.add_argument("--top", type=int, default=3)
    return parser.parse_args(argv)


def train_kwargs(args):
    return dict(model=args.model, dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size,
                learning_rate=args.learning_rate, strategy=args.strategy, out=args.out, seed=args.seed,
                limit=args.limit, val_fraction=args.val_fraction, patience=args.patience)


def main(argv=None):
    args = parse_args(argv)
    from apps.classify import app  # after parsing, so --help is instant

    if args.command == "train":
        app.train(**train_kwargs(args))
        print(f"run folder: {args.out} (model.keras, history.csv, learning_curves.png, logs/)")
    elif args.command == "evaluate":
        app.evaluate(out=args.out, limit=args.limit)
    elif args.command == "export":
        app.export_run(out=args.out, export_dir=args.export_dir, version=args.version)
    elif args.command == "predict":
        app.predict(args.images, out=args.out, saved_model=args.saved_model, resize=args.resize, top=args.top)
    elif args.command == "demo":
        start = time.time()
        app.train(**train_kwargs(args))
        report = app.evaluate(out=args.out)
        exported = app.export_run(out=args.out, export_dir=args.export_dir)
        print(f"\ndemo finished in {time.time() - start:.0f} s; test accuracy {report['accuracy']:.4f}")
        print(f"  model:        {os.path.join(args.out, 'model.keras')}")
        print(f"  SavedModel:   {exported['saved_model']}")
        for kind, path in exported["tflite"].items():
            print(f"  TFLite {kind + ':':8s}{path}")
        for png in ("learning_curves.png", "confusion_matrix.png", "test_predictions.png"):
            print(f"  PNG:          {os.path.join(args.out, png)}")


if __name__ == "__main__":
    run_cli(main, prog="apps.classify")
