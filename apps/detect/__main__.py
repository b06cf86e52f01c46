"""Command line: python -m apps.detect {train,evaluate,export,predict,localize,sliding-window,rcnn-classic} ...

  train     train a detector into its run folder (--model ssd: single shot; rcnn: two-stage with a mask head)
  evaluate  mAP@0.5 and mAP@[.5:.95] on the held-out test scenes vs random boxes; a PNG
  export    SavedModel (post-NMS boxes, classes, scores, num_detections [, masks]) + TFLite in
            saved_models/detect_<model>/, parity-checked
  predict   detect objects in PNG/JPEG files; PNGs with boxes, labels, scores and masks

The path toward detection (each writes its PNG into --run DIR, default runs/detect/<experiment>, and prints a
table):
  localize        one object per scene: a CNN with a class head and a box head; exported (detect_localize)
  sliding-window  a window classifier over a grid of windows + NMS vs the SSD: mAP and cost
  rcnn-classic    selective search + a crop classifier (R-CNN) vs the RPN detector; exported (detect_rcnn_classic)
"""

import argparse
import math
import os
import time

from apps.detect.config import APP, MODEL_NAMES, ExperimentConfig, LocalizeConfig, TrainConfig
from core.cli import (
    RUNS,
    add_config_flags,
    add_export_flags,
    add_run_flags,
    add_trained_run_flags,
    resolve_config,
    run_folder,
    trained_run_folder,
)
from core.errors import UserError, run_cli

DEFAULT_MODEL = TrainConfig.model
EXPERIMENTS = {  # verb: (help, its config) -- the module is apps.detect.<verb with _>
    "localize": ("single-object classification + localisation: CNN with class + box heads vs the mean box",
                 LocalizeConfig),
    "sliding-window": ("window classifier over a grid of windows + NMS vs the SSD: mAP@0.5, FLOPs, ms per image",
                       ExperimentConfig),
    "rcnn-classic": ("selective search + crop classifier (R-CNN) vs the RPN detector: mAP, time, proposal recall",
                     ExperimentConfig),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m apps.detect", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("train", help="train a detector (rerun the same command to resume)")
    add_config_flags(p, TrainConfig)
    add_run_flags(p, app=APP)

    p = commands.add_parser("evaluate", help="test mAP@0.5, mAP@[.5:.95], random-boxes baseline; PNG")
    add_trained_run_flags(p, app=APP, models=MODEL_NAMES, default_model=DEFAULT_MODEL)
    p.add_argument("--limit", type=int, default=None, help="use at most this many test scenes (default: all)")

    p = commands.add_parser("export", help="SavedModel for TF Serving and TFLite files in the export folder "
                                           "detect_<model>/, parity-checked")
    add_trained_run_flags(p, app=APP, models=MODEL_NAMES, default_model=DEFAULT_MODEL)
    add_export_flags(p)

    p = commands.add_parser("predict", help="detect objects in PNG/JPEG files")
    p.add_argument("images", nargs="+", help="image files")
    add_trained_run_flags(p, app=APP, models=MODEL_NAMES, default_model=DEFAULT_MODEL)
    p.add_argument("--resize", action="store_true", help="resize images to the detector's input size")

    for verb, (help_text, config_class) in EXPERIMENTS.items():
        p = commands.add_parser(verb, help=help_text, description=help_text)
        add_config_flags(p, config_class)
        p.add_argument("--run", default=os.path.join(RUNS, APP, verb.replace("-", "_")), metavar="DIR",
                       help="the folder of the PNG (default: %(default)s)")
        if verb != "sliding-window":
            add_export_flags(p, version=False)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    command = args.command
    if command in EXPERIMENTS:
        run_experiment(args, resolve_config(EXPERIMENTS[command][1], args))
        return
    if command == "train":
        config = resolve_config(TrainConfig, args)
        run_dir = run_folder(APP, config.model, args.run)
        from apps.detect import app  # after parsing, so --help is instant

        app.train(config, run_dir=run_dir, strategy=args.strategy)
        print(f"run folder: {run_dir} (config.json, model.keras, history.csv, learning_curves.png, logs/); "
              f"next: python -m apps.detect evaluate --run {run_dir}")
        return
    run_dir = trained_run_folder(APP, args, DEFAULT_MODEL)
    from apps.detect import app

    if command == "evaluate":
        app.evaluate(run_dir, limit=args.limit)
    elif command == "export":
        app.export_run(run_dir, export_dir=args.export_dir, version=args.version)
    elif command == "predict":
        app.predict(args.images, run_dir=run_dir, resize=args.resize)


def run_experiment(args, config):
    import importlib

    from core import training

    weight = getattr(config, "box_weight", 0.0)
    if not math.isfinite(weight):
        raise UserError(f"--box-weight must be a finite number of at least 0, got {weight}")
    start = time.time()
    training.set_seed(config.seed)
    module = importlib.import_module(f"apps.detect.{args.command.replace('-', '_')}")
    print(f"== {args.command}: {EXPERIMENTS[args.command][0]}")
    options = {key: getattr(source, key) for source, key in ((args, "export_dir"), (config, "box_weight"))
               if hasattr(source, key)}
    module.run(run_dir=args.run, small=config.small, seed=config.seed, **options)
    print(f"{args.command} finished in {time.time() - start:.0f} s")


if __name__ == "__main__":
    run_cli(main, prog="apps.detect")
