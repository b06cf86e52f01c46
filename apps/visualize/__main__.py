"""Command line: python -m apps.visualize METHOD [--run RUN_OR_SAVEDMODEL] [--figures DIR] [--seed N] [options]

RUN is the run folder of apps.classify to explain (config.json + model.keras; default:
runs/classify/<the classify app's default model>) or an exported SavedModel version folder
(saved_models/classify_<model>/1). A SavedModel only has images -> probabilities, so the
methods that look at layers need the run. Every method writes PNG files into --figures
(default: RUN/visualize/; for a SavedModel runs/visualize/<app>-v<version>/) and prints their paths.
"""

import argparse

from core.errors import UserError, run_cli


def default_run():
    """The classify run the methods explain by default: runs/classify/<DEFAULT_MODEL> (apps.classify.budgets
    imports no TensorFlow, so --help stays instant)."""
    from apps.classify.budgets import DEFAULT_MODEL
    from core.cli import run_folder

    return run_folder("classify", DEFAULT_MODEL)

GRADIENT_METHODS = {"saliency": "saliency", "deconvnet": "deconvnet", "guided-backprop": "guided",
                    "gradcam": "gradcam"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m apps.visualize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name, help_text, images=False, class_option=False):
        p = commands.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--run", default=default_run(), metavar="DIR",
                       help="the classify run folder to explain, or a SavedModel version folder "
                            "(default: %(default)s)")
        p.add_argument("--dataset", default=None, help="dataset of the test images (default: the run's)")
        p.add_argument("--figures", default=None, metavar="DIR",
                       help="the folder for the PNG files (default: RUN/visualize)")
        p.add_argument("--seed", type=int, default=0 if name != "adversarial-train" else None,
                       help="random seed, an integer >= 0: test images, noise, starts (default: "
                            + ("0)" if name != "adversarial-train" else "the standard run's)"))
        if images:
            p.add_argument("--images", nargs="+", default=None, help="PNG/JPEG files instead of test images")
            p.add_argument("--resize", action="store_true", help="resize --images to the model's input size")
            p.add_argument("--count", type=int, default=6, help="number of test images (default: %(default)s)")
        if class_option:
            p.add_argument("--class", dest="class_name", default=None,
                           help="class to explain, name or index (default: the predicted class)")
        return p

    p = command("architecture", "block diagram of the model (graphviz), or its text summary")
    p.add_argument("--text", action="store_true", help="write the text summary even when graphviz is there")
    command("curves", "training curves from the run's history.csv")
    command("kernels", "the learned kernels of the first convolution")
    p = command("activations", "feature maps of a named layer for one image", images=True)
    p.add_argument("--layer", required=True, help="layer name (an unknown name lists them)")
    p = command("occlusion", "occlusion sensitivity: drop in class probability under a sliding patch",
                images=True, class_option=True)
    p.add_argument("--patch", type=int, default=6)
    p.add_argument("--stride", type=int, default=2)
    p = command("top-images", "the test images that activate one channel of a layer most")
    p.add_argument("--layer", required=True)
    p.add_argument("--channel", type=int, default=0)
    p.add_argument("--count", type=int, default=9)
    p.add_argument("--pool", type=int, default=2000, help="test images searched (default: %(default)s)")
    for name in GRADIENT_METHODS:
        p = command(name, f"{name} map for the predicted (or --class) class", images=True, class_option=True)
        if name == "gradcam":
            p.add_argument("--layer", default=None, help="convolutional layer (default: the last one)")
    p = command("gradients", "saliency, deconvnet, guided backprop, Grad-CAM side by side", images=True,
                class_option=True)
    p.add_argument("--layer", default=None, help="Grad-CAM layer (default: the last convolutional one)")

    p = command("dream", "activation maximization (from noise) or DeepDream (from an image, --from-image)",
                images=True)
    p.add_argument("--layer", default=None, help="layer whose channel to maximize (default: the class score)")
    p.add_argument("--channel", type=int, default=None, help="channel of --layer (default: all channels)")
    p.add_argument("--class", dest="class_name", default=None,
                   help="class score to maximize when no --layer (default: every class)")
    p.add_argument("--from-image", action="store_true", help="DeepDream: start from the test images")
    p.add_argument("--steps", type=int, default=60, help="gradient steps per octave")
    p.add_argument("--octaves", type=int, default=3)
    p.add_argument("--jitter", type=int, default=2, help="random shift in pixels each step")
    p = command("invert", "reconstruct an image from a layer's activations with a total-variation prior",
                images=True)
    p.add_argument("--layer", required=True)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--tv-weight", type=float, default=None, help="weight of the TV prior (default: auto)")
    p = command("tsne", "t-SNE of the penultimate-layer features of the test set, coloured by class")
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--perplexity", type=float, default=30.0)
    p = command("attack", "FGSM/PGD adversarial examples and the accuracy under attack at several eps")
    p.add_argument("--method", choices=["fgsm", "pgd", "both"], default="both")
    p.add_argument("--eps", type=float, nargs="+", default=None,
                   help="attack strengths, fractions of the pixel range (default: 0 0.02 0.05 0.1 0.2)")
    p.add_argument("--show-eps", type=float, default=0.1, help="eps of the example triplets")
    p.add_argument("--steps", type=int, default=10, help="PGD steps")
    p.add_argument("--target", default=None, help="targeted attack towards this class (name or index)")
    p.add_argument("--count", type=int, default=500, help="test images attacked")
    p = command("adversarial-train", "train the run's architecture on adversarial examples into a new run "
                                     "folder; compare robust accuracy")
    p.add_argument("--to", required=True, help="the new run folder (e.g. runs/classify/lenet5_adv)")
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--method", choices=["fgsm", "pgd"], default="fgsm",
                   help="fgsm: FGSM from a random start; pgd: PGD with --steps")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--share", type=float, default=0.5, help="share of each batch made adversarial")
    p.add_argument("--epochs", type=int, default=None, help="default: the standard run's")
    p.add_argument("--limit", type=int, default=None, help="default: the standard run's")
    p.add_argument("--finetune", action="store_true", help="start from the standard run's weights")
    p.add_argument("--count", type=int, default=500, help="test images for the robustness comparison")
    p = command("robustness", "accuracy under FGSM and PGD of several classifiers (--run plus --compare)")
    p.add_argument("--compare", nargs="+", default=[], help="more run or SavedModel folders")
    p.add_argument("--eps", type=float, nargs="+", default=None)
    p.add_argument("--count", type=int, default=500)
    p = command("all", "every method with its defaults (a quick tour)")
    p.add_argument("--count", type=int, default=6)
    return parser.parse_args(argv)


def _images(clf, args):
    from apps.visualize import common

    return common.input_images(clf, images=getattr(args, "images", None), count=args.count, seed=args.seed,
                               resize=getattr(args, "resize", False))


def _print(result):
    pngs = []
    if isinstance(result, dict):
        for key in ("png", "txt"):
            if result.get(key):
                pngs.append(result[key])
        pngs += list(result.get("pngs", {}).values())
    for path in pngs:
        print(f"wrote {path}")
    return pngs


def run_method(args, clf):
    from apps.visualize import adversarial, gradients, inspect

    c = args.command
    if c == "architecture":
        return inspect.architecture(clf, args.figures, renderer="text" if args.text else "auto")
    if c == "curves":
        return inspect.curves(clf, args.figures)
    if c == "kernels":
        return inspect.kernels(clf, args.figures)
    if c == "activations":
        x, y = _images(clf, args)
        return inspect.activations(clf, args.layer, x, y, args.figures)
    if c == "occlusion":
        x, y = _images(clf, args)
        return inspect.occlusion(clf, x, y, class_name=args.class_name, patch=args.patch, stride=args.stride,
                                 figures=args.figures)
    if c == "top-images":
        return inspect.top_images(clf, args.layer, args.channel, count=args.count, pool=args.pool,
                                  figures=args.figures)
    if c in GRADIENT_METHODS or c == "gradients":
        x, y = _images(clf, args)
        methods = [GRADIENT_METHODS[c]] if c in GRADIENT_METHODS else list(GRADIENT_METHODS.values())
        return gradients.explain(clf, x, y, methods=methods, class_name=args.class_name,
                                 layer=getattr(args, "layer", None), figures=args.figures)
    if c == "dream":
        from apps.visualize import synthesis

        x, y = _images(clf, args) if args.from_image else (None, None)
        return synthesis.dream(clf, layer=args.layer, channel=args.channel, class_name=args.class_name,
                               start=x, steps=args.steps, octaves=args.octaves, jitter=args.jitter, seed=args.seed,
                               figures=args.figures)
    if c == "invert":
        from apps.visualize import synthesis

        x, y = _images(clf, args)
        return synthesis.invert(clf, args.layer, x[:min(len(x), 4)], steps=args.steps, tv_weight=args.tv_weight,
                                seed=args.seed, figures=args.figures)
    if c == "tsne":
        from apps.visualize import embedding

        return embedding.tsne(clf, count=args.count, perplexity=args.perplexity, seed=args.seed,
                              figures=args.figures)
    if c == "attack":
        return adversarial.run_attacks(clf, count=args.count, epsilons=args.eps or adversarial.DEFAULT_EPSILONS,
                                       show_eps=args.show_eps, method=args.method, steps=args.steps,
                                       target=args.target, figures=args.figures)
    if c == "robustness":
        return adversarial.compare_robustness([args.run] + args.compare, count=args.count,
                                              epsilons=args.eps or adversarial.DEFAULT_EPSILONS,
                                              figures=args.figures)
    raise AssertionError(c)


def run_all(args, clf):
    """Every method that the classifier supports, with defaults suited to a quick tour."""
    model = clf.model
    tour = ["architecture", "curves", "kernels", "activations", "occlusion", "top-images", "gradients",
            "dream", "invert", "tsne", "attack"]
    first_conv = None
    if model is not None:
        from apps.visualize.inspect import first_conv_layer

        first_conv = first_conv_layer(model).name
    pngs = []
    for name in tour:
        if model is None and name not in ("occlusion", "gradients", "attack", "dream"):
            continue
        sub = argparse.Namespace(**vars(args))
        sub.command = name
        sub.images, sub.resize, sub.class_name, sub.layer, sub.channel = None, False, None, first_conv, 0
        sub.text, sub.patch, sub.stride, sub.pool = False, 6, 2, 1000
        sub.steps, sub.octaves, sub.jitter, sub.from_image, sub.tv_weight = 40, 3, 2, False, None
        sub.perplexity, sub.method, sub.eps, sub.show_eps, sub.target = 30.0, "both", None, 0.1, None
        sub.count = {"top-images": 9, "tsne": 500, "attack": 300}.get(name, args.count)
        if name in ("gradients", "dream"):
            sub.layer, sub.channel = None, None
        if name == "invert":
            sub.steps = 150
        print(f"--- {name}")
        if model is None and name == "gradients":
            sub.command = "saliency"
        pngs += _print(run_method(sub, clf))
    return pngs


POSITIVE_OPTIONS = ("count", "patch", "stride", "pool", "steps", "octaves")


def main(argv=None):
    args = parse_args(argv)
    # Out-of-range counts fail here, in a second, not after TensorFlow has loaded.
    for name in POSITIVE_OPTIONS:
        if getattr(args, name, None) is not None and getattr(args, name) < 1:
            raise UserError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.seed is not None and args.seed < 0:
        raise UserError(f"--seed must be an integer >= 0, got {args.seed}")
    if getattr(args, "perplexity", 1) <= 0 or not 0 <= getattr(args, "share", 0) <= 1:
        raise UserError("--perplexity must be positive and --share between 0 and 1")
    from apps.visualize import adversarial, common

    if args.command == "adversarial-train":
        result = adversarial.adversarial_train(run=args.run, out=args.to, eps=args.eps, method=args.method,
                                               steps=args.steps, share=args.share, epochs=args.epochs,
                                               limit=args.limit, eval_count=args.count,
                                               seed=args.seed, finetune=args.finetune)
        print(f"run folder: {args.to} (model.keras, history.csv, learning_curves.png)")
        _print(result)
        return result
    clf = common.load_classifier(args.run, args.dataset)
    if args.command == "all":
        return run_all(args, clf)
    result = run_method(args, clf)
    _print(result)
    return result


if __name__ == "__main__":
    run_cli(main, prog="apps.visualize")
