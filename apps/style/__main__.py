"""Command line: python -m apps.style {transfer,fast} [options]

  transfer  Gatys et al. neural style transfer of one content image
  fast      train a feed-forward stylizer for one style; export SavedModel + TFLite

Images are files or skimage.data photo names (default content 'chelsea', style
'immunohistochemistry'). Features: 'random' (offline default: multi-scale
random-weight CNN) or 'vgg19' with --weights PATH (ImageNet notop .h5) or
--weights imagenet (downloads; needs the network).
"""

import argparse

from core.errors import UserError, run_cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m apps.style", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--style", default="immunohistochemistry", help="style image (default: %(default)s)")
        p.add_argument("--content", default="chelsea", help="content image (default: %(default)s)")
        p.add_argument("--features", choices=["random", "vgg19"], default="random")
        p.add_argument("--weights", default=None, help="VGG19 weights: .h5 path, or 'imagenet' to download")
        p.add_argument("--style-weight", type=float, default=None)
        p.add_argument("--content-weight", type=float, default=None)
        p.add_argument("--tv-weight", type=float, default=None)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--out", default="runs/style", help="PNG folder (default: %(default)s)")

    p = commands.add_parser("transfer", help="optimize one image (Gatys et al. 2016)")
    common(p)
    p.add_argument("--size", type=int, default=128, help="side of the square images (default: %(default)s)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--learning-rate", type=float, default=4.0, help="Adam step in pixel units")
    p = commands.add_parser("fast", help="train a feed-forward stylizer (Johnson et al. 2016) and export it")
    common(p)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--size", type=int, default=64, help="training crop size (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--export-dir", default="saved_models", help="root of the exports (default: %(default)s)")
    p.add_argument("--no-export", action="store_true")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    # Out-of-range sizes fail here, in a second, not after TensorFlow has loaded.
    if args.steps < 1 or args.size < 16 or getattr(args, "batch_size", 1) < 1:
        raise UserError(f"--steps and --batch-size must be at least 1 and --size at least 16 "
                        f"(got --steps {args.steps}, --size {args.size})")
    from apps.style import app
    from core import training

    training.make_output_dir(args.out)  # before minutes of optimization, not after

    weights = dict(style_weight=args.style_weight, content_weight=args.content_weight, tv_weight=args.tv_weight)
    if args.command == "transfer":
        return app.transfer(content=args.content, style=args.style, size=args.size, steps=args.steps,
                            learning_rate=args.learning_rate, features=args.features, weights_path=args.weights,
                            seed=args.seed, out=args.out, **weights)
    return app.train_fast(style=args.style, content=args.content, steps=args.steps, size=args.size,
                          batch_size=args.batch_size, features=args.features, weights_path=args.weights,
                          seed=args.seed, out=args.out, export_dir=args.export_dir, export=not args.no_export,
                          **weights)


if __name__ == "__main__":
    run_cli(main, prog="apps.style")
