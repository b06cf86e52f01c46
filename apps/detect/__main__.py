"""Command line: python -m apps.detect {train,evaluate,export,predict,localize,sliding-window,rcnn-classic} ...

  train     train a detector (--model ssd: single shot; rcnn: two-stage with a mask head)
  evaluate  mAP@0.5 and mAP@[.5:.95] on the held-out test scenes vs random boxes; a PNG
  export    SavedModel (post-NMS boxes, classes, scores, num_detections [, masks]) + TFLite, parity-checked
  predict   detect objects in PNG/JPEG files; PNGs with boxes, labels, scores and masks

The path toward detection (each writes a PNG under <out>/<experiment>/ and prints a table):
  localize        one object per scene: a CNN with a class head and a box head; exported
  sliding-window  a window classifier over a grid of windows + NMS vs the SSD: mAP and cost
  rcnn-classic    selective search + a crop classifier (R-CNN) vs the RPN detector; exported
"""

import argparse
import math
import time

from core.errors import UserError, run_cli

MODEL_NAMES = ("ssd", "rcnn")
# Default epochs (on all 8,000 training scenes); the figures in docs/detect.md use shorter budgets via --limit.
DEFAULT_EPOCHS = {"ssd": 6, "rcnn": 6}
EXPERIMENTS = {  # verb: help (the module is apps.detect.<verb with _>)
    "localize": "single-object classification + localisation: CNN with class + box heads vs the mean box",
    "sliding-window": "window classifier over a grid of windows + NMS vs the SSD: mAP@0.5, FLOPs, ms per image",
    "rcnn-classic": "selective search + crop classifier (R-CNN) vs the RPN detector: mAP, time, proposal recall",
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m apps.detect", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    def add_run_options(p):
        p.add_argument("--model", default="ssd", help=f"{', '.join(MODEL_NAMES)} (default: %(default)s); "
                                                      "with --out it names the run folder")
        p.add_argument("--out", default=None, help="run folder (default: runs/detect/<model>)")

    p = commands.add_parser("train", help="train a detector (rerun the same command to resume)")
    add_run_options(p)
    p.add_argument("--dataset", default="fashion_mnist_96",
                   help="tfds scene config: fashion_mnist_96, mnist_96, fashion_mnist_64_small (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default: the model's budget)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size per replica (default: %(default)s)")
    p.add_argument("--learning-rate", type=float, default=2e-3)
    p.add_argument("--limit", type=int, default=None, help="use at most this many scenes per split")
    p.add_argument("--strategy", default="auto", help="auto, default, mirrored or multiworker")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="tensorflow-datasets folder (default: data/tensorflow_datasets)")

    p = commands.add_parser("evaluate", help="test mAP@0.5, mAP@[.5:.95], random-boxes baseline; PNG")
    add_run_options(p)
    p.add_argument("--limit", type=int, default=None, help="use at most this many test scenes")
    p.add_argument("--data-dir", default=None)

    p = commands.add_parser("export", help="SavedModel for TF Serving and TFLite files, parity-checked")
    add_run_options(p)
    p.add_argument("--export-dir", default="saved_models", help="root of the exports (default: %(default)s)")
    p.add_argument("--version", type=int, default=None, help="version number (default: next free)")
    p.add_argument("--data-dir", default=None)

    p = commands.add_parser("predict", help="detect objects in PNG/JPEG files")
    p.add_argument("images", nargs="+", help="image files")
    add_run_options(p)
    p.add_argument("--resize", action="store_true", help="resize images to the detector's input size")

    for name, help_text in EXPERIMENTS.items():
        p = commands.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--out", default="runs/detect", help="root of the PNG folders (default: %(default)s)")
        p.add_argument("--small", action="store_true",
                       help="a quick run: fewer scenes and epochs (2-4 min on a busy 2-core CPU)")
        p.add_argument("--seed", type=int, default=0, help="seed of the scenes and the training (default: %(default)s)")
        if name != "sliding-window":
            p.add_argument("--export-dir", default="saved_models", help="root of the exports (default: %(default)s)")
        if name == "localize":
            p.add_argument("--box-weight", type=float, default=1.0,
                           help="lambda in cross-entropy + lambda * box loss (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.command in EXPERIMENTS:
        if args.seed < 0:
            raise UserError(f"--seed must be at least 0, got {args.seed}")
        weight = getattr(args, "box_weight", 0.0)
        if not (math.isfinite(weight) and weight >= 0):
            raise UserError(f"--box-weight must be a finite number of at least 0, got {weight}")
        return args
    if args.model not in MODEL_NAMES:
        raise UserError(f"unknown model '{args.model}'; choose one of: {', '.join(MODEL_NAMES)}")
    args.out = args.out or f"runs/detect/{args.model}"
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.command in EXPERIMENTS:
        run_experiment(args)
        return
    from apps.detect import app  # after parsing, so --help is instant

    if args.command == "train":
        epochs = args.epochs if args.epochs is not None else DEFAULT_EPOCHS[args.model]
        app.train(model=args.model, dataset=args.dataset, epochs=epochs, batch_size=args.batch_size,
                  learning_rate=args.learning_rate, strategy=args.strategy, out=args.out, seed=args.seed,
                  limit=args.limit, data_dir=args.data_dir)
        print(f"run folder: {args.out} (model.keras, history.csv, learning_curves.png, logs/); "
              f"next: python -m apps.detect evaluate --model {args.model}")
    elif args.command == "evaluate":
        app.evaluate(out=args.out, limit=args.limit, data_dir=args.data_dir)
    elif args.command == "export":
        app.export_run(out=args.out, export_dir=args.export_dir, version=args.version, data_dir=args.data_dir)
    elif args.command == "predict":
        app.predict(args.images, out=args.out, resize=args.resize)


def run_experiment(args):
    import importlib

    from core import training

    start = time.time()
    training.set_seed(args.seed)
    module = importlib.import_module(f"apps.detect.{args.command.replace('-', '_')}")
    print(f"== {args.command}: {EXPERIMENTS[args.command]}")
    options = {key: getattr(args, key) for key in ("export_dir", "box_weight") if hasattr(args, key)}
    module.run(out=args.out, small=args.small, seed=args.seed, **options)
    print(f"{args.command} finished in {time.time() - start:.0f} s")


if __name__ == "__main__":
    run_cli(main, prog="apps.detect")
