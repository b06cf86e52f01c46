"""Command line: python -m apps.style {train,evaluate,export,predict,transfer} ...

  train     train the fast feed-forward stylizer for one style (Johnson et al. 2016)
  evaluate  its losses on held-out photo crops, next to the unstylized crops
  export    SavedModel + float/dynamic TFLite: saved_models/style_fast/<version>/
  predict   stylized PNGs of image files (or of the run's content image)
  transfer  Gatys et al. neural style transfer of one content image (optimisation of the pixels)

Images are files or skimage.data photo names (default content 'chelsea', style
'immunohistochemistry'). Features: 'random' (offline default: multi-scale
random-weight CNN) or 'vgg19' with --weights PATH (ImageNet notop .h5) or
--weights imagenet (downloads; needs the network).
"""

import argparse
import os

from apps.style.config import MODELS, StylizerConfig, TransferConfig
from core.cli import add_config_flags, add_run_flags, resolve_config, run_folder
from core.errors import UserError, run_cli

APP = "style"
DEFAULT_MODEL = StylizerConfig().model


def add_model_flags(p):
    """--model (names the default run folder) and --run, for the verbs that read a run."""
    p.add_argument("--model", default=DEFAULT_MODEL, choices=MODELS, metavar="NAME",
                   help=f"names the default run folder: {', '.join(MODELS)} (default: %(default)s)")
    p.add_argument("--run", default=None, metavar="DIR", help=f"the run folder (default: runs/{APP}/<model>)")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m apps.style", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="command", required=True)

    p = verbs.add_parser("train", help="train the fast stylizer for one style")
    add_config_flags(p, StylizerConfig, title="stylizer settings")
    add_run_flags(p, app=APP)

    p = verbs.add_parser("evaluate", help="losses of the stylized held-out crops vs the unstylized crops")
    add_model_flags(p)
    p.add_argument("--count", type=int, default=8, help="held-out crops (default: %(default)s)")

    p = verbs.add_parser("export", help="SavedModel + float/dynamic TFLite, parity-checked")
    add_model_flags(p)
    p.add_argument("--export-dir", default="saved_models", metavar="DIR",
                   help="root of the exports: DIR/style_<model>/<version>/ (default: %(default)s)")
    p.add_argument("--version", type=int, default=None, help="version number (default: the next free one)")

    p = verbs.add_parser("predict", help="stylized PNGs of image files, written into the run folder")
    add_model_flags(p)
    p.add_argument("images", nargs="*", metavar="IMAGE",
                   help="image files or skimage.data photo names (none: the run's content image)")
    p.add_argument("--size", type=int, default=128, help="shorter side of the stylized images (default: %(default)s)")

    p = verbs.add_parser("transfer", help="optimize one image (Gatys et al. 2016); PNGs into --run")
    add_config_flags(p, TransferConfig, title="transfer settings")
    p.add_argument("--run", default=os.path.join("runs", APP, "transfer"), metavar="DIR",
                   help="folder of the PNGs (default: %(default)s)")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="a JSON file of transfer settings whose values replace the defaults; flags typed here "
                        "replace its values")
    args = parser.parse_args(argv)
    for name, minimum in (("count", 1), ("version", 1), ("size", 16)):
        value = getattr(args, name, None)
        if args.command != "transfer" and value is not None and value < minimum:
            raise UserError(f"--{name} must be at least {minimum}, got {value}")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.command == "transfer":
        config = resolve_config(TransferConfig, args)
        from apps.style import app

        return app.transfer(config, run=args.run)
    if args.command == "train":
        config = resolve_config(StylizerConfig, args)
        run = run_folder(APP, config.model, args.run)
        from apps.style import stylizer

        stylizer.train(config, run=run, strategy=args.strategy)
        print(f"run folder: {run}")
        return
    run = run_folder(APP, args.model, args.run)
    from apps.style import stylizer

    if args.command == "evaluate":
        return stylizer.evaluate(run=run, count=args.count)
    if args.command == "export":
        return stylizer.export_run(run=run, export_dir=args.export_dir, version=args.version)
    return stylizer.predict(args.images, run=run, size=args.size)


if __name__ == "__main__":
    run_cli(main, prog="apps.style")
