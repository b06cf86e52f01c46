"""Command line: python -m apps.segment {train,evaluate,export,predict,preview,sliding-window,crf} ...

  train           train a model into its run folder (rerun the same command to resume)
  evaluate        pixel accuracy, mean pixel accuracy, per-class IoU and mIoU on the test scenes; PNGs
  export          SavedModel + float/dynamic TFLite in saved_models/segment_<model>/, parity-checked
  predict         colour-coded mask overlays of PNG/JPEG files, or of test scenes

The experiments (each writes its PNG into --run DIR, default runs/segment/<experiment>):
  preview         scenes, masks and boxes of a dataset split
  sliding-window  sliding-window patch classifier vs the FCN at the same training budget
  crf             dense-CRF (mean field) refinement of an FCN's masks: mIoU before/after
"""

import argparse
import os

from apps.segment.config import APP, MODEL_NAMES, CRFConfig, CRFParams, PreviewConfig, SlidingWindowConfig, TrainConfig
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
from core.errors import run_cli

DEFAULT_MODEL = TrainConfig.model


def add_experiment_flags(p, config_class, folder):
    add_config_flags(p, config_class)
    p.add_argument("--run", default=os.path.join(RUNS, APP, folder), metavar="DIR",
                   help="the folder of the PNG (default: %(default)s)")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m apps.segment", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("train", help="train a model (rerun the same command to resume)")
    add_config_flags(p, TrainConfig)
    add_run_flags(p, app=APP)

    p = commands.add_parser("evaluate", help="pixel accuracy, mean pixel accuracy, per-class IoU and mIoU on the "
                                             "test scenes, vs all-background; confusion-matrix and overlay PNGs")
    add_trained_run_flags(p, app=APP, models=MODEL_NAMES, default_model=DEFAULT_MODEL)
    p.add_argument("--limit", type=int, default=None, help="evaluate on at most this many test scenes "
                                                           "(default: all)")

    p = commands.add_parser("export", help="SavedModel + float/dynamic TFLite in saved_models/segment_<model>/, "
                                           "parity-checked")
    add_trained_run_flags(p, app=APP, models=MODEL_NAMES, default_model=DEFAULT_MODEL)
    add_export_flags(p)

    p = commands.add_parser("predict", help="colour-coded mask overlays of PNG/JPEG files, or of test scenes")
    add_trained_run_flags(p, app=APP, models=MODEL_NAMES, default_model=DEFAULT_MODEL)
    p.add_argument("images", nargs="*", help="image files (none: the first --count test scenes, with truth)")
    p.add_argument("--count", type=int, default=8, help="test scenes shown when no files are given (default: 8)")
    p.add_argument("--saved-model", default=None, help="use this exported version folder instead of the run")
    p.add_argument("--resize", action="store_true", help="resize images to the model's input size")
    p.add_argument("--png", default=None, help="where to write the overlays (default: RUN/predictions.png)")

    p = commands.add_parser("preview", help="scenes, masks and boxes of a dataset split as a PNG")
    add_experiment_flags(p, PreviewConfig, "preview")

    p = commands.add_parser("sliding-window", help="sliding-window patch classifier vs the FCN at the same training "
                                                   "budget: mIoU, FLOPs and ms per scene; the patch net run "
                                                   "convolutionally gives the same logits")
    add_experiment_flags(p, SlidingWindowConfig, "sliding_window")

    p = commands.add_parser("crf", help="dense-CRF (mean field) refinement of an FCN's masks: mIoU before/after")
    add_experiment_flags(p, CRFConfig, "crf")
    add_config_flags(p, CRFParams, skip=("appearance_weight",), title="the CRF (w_a is picked on half the scenes)")
    p.add_argument("--from-run", default=None, metavar="DIR",
                   help="a segment training run whose model to refine (default: none, train a quick FCN first)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    command = args.command
    if command == "train":
        config = resolve_config(TrainConfig, args)
        run_dir = run_folder(APP, config.model, args.run)
        from apps.segment import app  # after parsing, so --help is instant

        app.train(config, run_dir=run_dir, strategy=args.strategy)
        print(f"run folder: {run_dir} (config.json, model.keras, history.csv, learning_curves.png, logs/); "
              f"next: python -m apps.segment evaluate --run {run_dir}")
    elif command in ("evaluate", "export", "predict"):
        run_dir = trained_run_folder(APP, args, DEFAULT_MODEL)
        from apps.segment import app

        if command == "evaluate":
            app.evaluate(run_dir, limit=args.limit)
        elif command == "export":
            app.export_run(run_dir, export_dir=args.export_dir, version=args.version)
        else:
            app.predict(args.images, run_dir=run_dir, saved_model=args.saved_model, resize=args.resize,
                        count=args.count, png=args.png)
    elif command == "preview":
        config = resolve_config(PreviewConfig, args)
        from apps.segment import app

        app.preview(config, run_dir=args.run)
    elif command == "sliding-window":
        config = resolve_config(SlidingWindowConfig, args)
        from apps.segment import sliding_window

        sliding_window.run(run_dir=args.run, small=config.small, seed=config.seed, steps=config.steps)
    elif command == "crf":
        config, params = resolve_config(CRFConfig, args), resolve_config(CRFParams, args)
        from apps.segment import crf

        crf.run(run_dir=args.run, small=config.small, seed=config.seed, from_run=args.from_run,
                scenes_count=config.scenes, params=params)


if __name__ == "__main__":
    run_cli(main, prog="apps.segment")
