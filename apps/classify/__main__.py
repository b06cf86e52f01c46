"""Command line: python -m apps.classify VERB ...

Verbs: train, demo, zoo, cv, compare, transfer, ensemble, study, evaluate, export, predict.
"""

import argparse
import os
import shlex
import time

from apps.classify.budgets import DEFAULT_MODEL, budget
from core.errors import UserError, run_cli

DEFAULT_OUT = os.path.join("runs", "classify")


MODEL_NAMES = ("mlp", "lenet5", "alexnet", "vgg", "nin", "googlenet", "resnet", "resnet_bottleneck",
               "resnet_preact", "wide_resnet", "resnext", "densenet", "se_resnet", "resnet_sd", "mobilenet",
               "inception_v3")
TRICKS = ("optimizer", "momentum", "lr_schedule", "warmup_epochs", "lr_step_epochs", "lr_gamma", "init", "l1", "l2",
          "dropout", "dropconnect", "batchnorm", "width", "label_smoothing", "augment", "imbalance", "resample",
          "class_weight", "aux_weight", "coarse_weight")
STUDIES = {  # apps/classify/studies.py
    "multitask": "independent towers vs hard sharing (one trunk, two heads) vs soft sharing "
                 "(λ·Σ‖W_fine − W_coarse‖²): fine-task accuracy with few fine labels, and the penalty vs λ",
    "transfer": "a Fashion-MNIST backbone transferred to MNIST digits (frozen or fine-tuned) vs training "
                "from scratch: test accuracy vs the number of labelled examples",
    "imbalance": "an imbalanced training set: no handling vs class weights vs over-sampling: macro recall, "
                 "macro F1 and the recall of the rarest classes",
}


def positive_int(text):
    """argparse type: an integer of at least 1 (a batch of 0 would divide by zero deep in training)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def add_trick_options(p):
    """The training tricks (apps/classify/recipes.py), each a flag."""
    g = p.add_argument_group("training tricks")
    g.add_argument("--optimizer", default="adam",
                   help="sgd, momentum, nesterov, adagrad, rmsprop, adam, amsgrad (default: %(default)s)")
    g.add_argument("--momentum", type=float, default=0.9, help="for momentum/nesterov (default: %(default)s)")
    g.add_argument("--lr-schedule", default="constant", help="constant, step, cosine (default: %(default)s)")
    g.add_argument("--warmup-epochs", type=float, default=0.0, help="linear learning-rate warm-up length")
    g.add_argument("--lr-step-epochs", type=float, default=2.0, help="step schedule: epochs between drops")
    g.add_argument("--lr-gamma", type=float, default=0.1, help="step schedule: factor at each drop")
    g.add_argument("--init", default="default", help="kernel initializer: default, xavier, he")
    g.add_argument("--l1", type=float, default=0.0, help="L1 penalty on every kernel, added to the loss")
    g.add_argument("--l2", type=float, default=0.0, help="L2 penalty on every kernel, added to the loss")
    g.add_argument("--dropout", type=float, default=None, help="dropout rate before the classifier")
    g.add_argument("--dropconnect", type=float, default=None,
                   help="add a DropConnect hidden layer with this rate before the classifier")
    g.add_argument("--batchnorm", action=argparse.BooleanOptionalAction, default=None,
                   help="batch norm on/off (default: the model's own)")
    g.add_argument("--width", type=float, default=None, help="multiply every channel count")
    g.add_argument("--label-smoothing", type=float, default=0.0, help="epsilon of label smoothing")
    g.add_argument("--augment", default="",
                   help="comma-separated keras-cv augmentations: flip, crop, randaugment, mixup, cutmix")
    g.add_argument("--imbalance", type=float, default=None,
                   help="make the training set imbalanced: class c keeps a share RATIO**(c/(K-1))")
    g.add_argument("--resample", default="none", help="none, over (over-sampling), under (under-sampling)")
    g.add_argument("--class-weight", default="none", help="none or balanced (w_c = N / (K n_c))")
    g.add_argument("--aux-weight", type=float, default=0.3, help="weight of auxiliary-classifier losses")
    g.add_argument("--coarse-weight", type=float, default=None,
                   help="multi-task: add a coarse-category head (Fashion-MNIST: top, bottom, footwear, bag) "
                        "whose loss counts with this weight")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m apps.classify", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def add_train_options(p, epochs):
        p.add_argument("--model", default=DEFAULT_MODEL,
                       help=f"model name: {', '.join(MODEL_NAMES)} (default: %(default)s)")
        p.add_argument("--dataset", default="fashion_mnist",
                       help="fashion_mnist, mnist5k, digits, or tfds:NAME (default: %(default)s)")
        p.add_argument("--epochs", type=positive_int, default=epochs, help="total epochs (default: %(default)s)")
        p.add_argument("--batch-size", type=positive_int, default=128,
                       help="batch size per replica (default: %(default)s)")
        p.add_argument("--learning-rate", type=float, default=1e-3)
        p.add_argument("--strategy", default="auto", help="auto, default, mirrored or multiworker")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--limit", type=int, default=None, help="use at most this many examples per split")
        p.add_argument("--val-fraction", type=float, default=0.1,
                       help="share of the training data held out for validation")
        p.add_argument("--patience", type=int, default=None,
                       help="early stopping: stop after this many epochs without a lower validation loss "
                            "and keep the best weights")
        add_trick_options(p)

    for name, help_text, epochs in [("train", "train a model (rerun the same command to resume)", 5),
                                    ("demo", "train, evaluate and export the default model", 3)]:
        p = commands.add_parser(name, help=help_text)
        add_train_options(p, epochs)
        p.add_argument("--out", default=DEFAULT_OUT, help="run folder (default: %(default)s)")
        if name == "demo":
            p.add_argument("--export-dir", default="saved_models")
            p.set_defaults(**budget(DEFAULT_MODEL))  # the default model's budget (budgets.py)

    p = commands.add_parser("zoo", help="train and evaluate every model on one budget; a Markdown table")
    add_train_options(p, 2)
    p.set_defaults(limit=2000, batch_size=64)
    p.add_argument("--models", default=None, help="comma-separated model names (default: all but mlp)")
    p.add_argument("--out", default=os.path.join(DEFAULT_OUT, "zoo"), help="runs and zoo.md (default: %(default)s)")
    p.add_argument("--table", default=None, help="where to write the Markdown table (default: OUT/zoo.md)")
    p.add_argument("--full", action="store_true",
                   help="each model with its own budget (apps/classify/budgets.py) on the whole dataset; "
                        "the training flags above are then ignored, except --dataset, --seed, --models")

    p = commands.add_parser("cv", help="stratified k-fold cross-validation on the training data: "
                                       "accuracy per fold and mean ± std")
    add_train_options(p, 5)
    p.add_argument("--folds", type=int, default=5, help="K, the number of folds (default: %(default)s)")
    p.add_argument("--out", default=os.path.join(DEFAULT_OUT, "cv"),
                   help="fold runs, cv.json and cv.csv (default: %(default)s)")

    p = commands.add_parser("compare", help="two training setups over N seeds on the same split: "
                                            "mean ± std test accuracy, paired t-test and Wilcoxon p-values")
    add_train_options(p, 5)
    p.add_argument("--a", default="", help='training flags of setup A on top of the others, e.g. "--model lenet5"')
    p.add_argument("--b", default="", help='training flags of setup B, e.g. "--model vgg --width 0.5"')
    p.add_argument("--models", default=None, help="shortcut: M1,M2 means --a '--model M1' --b '--model M2'")
    p.add_argument("--seeds", type=int, default=5, help="N, training seeds 0..N-1 (default: %(default)s)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default: %(default)s)")
    p.add_argument("--out", default=os.path.join(DEFAULT_OUT, "compare"),
                   help="runs, compare.json and compare.png (default: %(default)s)")

    p = commands.add_parser("transfer", help="transfer a trained backbone to another dataset")
    p.add_argument("--backbone", required=True, help="run folder of the trained source model")
    p.add_argument("--dataset", default="mnist5k", help="target dataset (default: %(default)s)")
    p.add_argument("--mode", default="feature",
                   help="feature (frozen feature extractor + new head) or finetune (default: %(default)s)")
    p.add_argument("--fine-tune-layers", type=int, default=None,
                   help="finetune only the top N backbone layers with weights (default: all)")
    p.add_argument("--epochs", type=positive_int, default=5)
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--optimizer", default="adam")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--patience", type=int, default=None)
    p.add_argument("--out", default=os.path.join(DEFAULT_OUT, "transfer"), help="run folder (default: %(default)s)")

    p = commands.add_parser("ensemble", help="average the probabilities of several trained runs")
    p.add_argument("runs", nargs="+", help="run folders (same dataset)")
    p.add_argument("--out", default=os.path.join(DEFAULT_OUT, "ensemble"), help="run folder (default: %(default)s)")

    p = commands.add_parser("study", help="measured effect of multi-task sharing, transfer learning or "
                                          "imbalance handling on a small training set: a PNG and a table",
                            description="; ".join(f"{k}: {v}" for k, v in STUDIES.items()))
    p.add_argument("name", choices=[*STUDIES, "all"], help="the study (all: one after the other)")
    p.add_argument("--small", action="store_true", help="reduced size: a quick demo instead of minutes")
    p.add_argument("--seed", type=int, default=0, help="data split and first training seed (default: %(default)s)")
    p.add_argument("--out", default=os.path.join(DEFAULT_OUT, "studies"),
                   help="root of the study folders (default: %(default)s)")

    p = commands.add_parser("evaluate",
                            help="test accuracy, top-k error, per-class precision/recall/F1, one-vs-rest ROC AUC; "
                                 "confusion-matrix and ROC PNGs")
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


SPLIT_KEYS = ("dataset", "limit", "val_fraction", "seed", "out")  # the data split and run folder, not a setup


def compare_setups(args):
    """The two setups of `compare`: the shared training flags, each updated by
    its --a/--b flags (parsed like `train`'s), minus the split keys."""
    if args.models:
        names = [m.strip() for m in args.models.split(",")]
        if len(names) != 2 or args.a or args.b:
            raise UserError("--models takes exactly two comma-separated names (M1,M2) and replaces --a/--b")
        args.a, args.b = f"--model {names[0]}", f"--model {names[1]}"
    if args.a == args.b:
        raise UserError("compare needs two different setups: give --a and --b (or --models M1,M2)")

    def fail(message):
        raise UserError(f"in --a/--b: {message}")

    setups = []
    for flags in (args.a, args.b):
        setup = train_kwargs(argparse.Namespace(**{**vars(args), **_parse_setup(flags, vars(args), fail)}))
        for key in SPLIT_KEYS:
            setup.pop(key)
        setups.append(setup)
    return setups


def _parse_setup(flags, base, fail):
    """Flags of one setup, parsed with `train`'s options whose defaults are the shared values."""
    parser = argparse.ArgumentParser(prog="compare --a/--b", add_help=False)
    parser.error = fail
    parser.add_argument("--model")
    parser.add_argument("--epochs", type=positive_int)
    parser.add_argument("--batch-size", type=positive_int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--patience", type=int)
    add_trick_options(parser)
    parser.set_defaults(**{k: base[k] for k in ("model", "epochs", "batch_size", "learning_rate", "patience",
                                                  *TRICKS)})
    try:
        return vars(parser.parse_args(shlex.split(flags)))
    except ValueError as error:  # shlex: an unbalanced quote
        raise UserError(f"in --a/--b: {error}") from None


def train_kwargs(args):
    return dict(model=args.model, dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size,
                learning_rate=args.learning_rate, strategy=args.strategy, out=args.out, seed=args.seed,
                limit=args.limit, val_fraction=args.val_fraction, patience=args.patience,
                **{k: getattr(args, k) for k in TRICKS})


def main(argv=None):
    args = parse_args(argv)
    from apps.classify import app  # after parsing, so --help is instant

    if args.command == "train":
        app.train(**train_kwargs(args))
        print(f"run folder: {args.out} (model.keras, history.csv, learning_curves.png, logs/)")
    elif args.command == "zoo":
        kwargs = train_kwargs(args)
        for key in ("model", "strategy", "val_fraction", "patience", "out"):
            kwargs.pop(key)
        models = [m.strip() for m in args.models.split(",")] if args.models else None
        if args.full:
            app.zoo_full(models=models, dataset=args.dataset, seed=args.seed, out=args.out, table=args.table)
        else:
            app.zoo(models=models, out=args.out, table=args.table, **kwargs)
    elif args.command == "cv":
        from apps.classify import evaluation

        kwargs = train_kwargs(args)
        kwargs.pop("strategy")
        evaluation.cross_validate(folds=args.folds, **kwargs)
    elif args.command == "compare":
        from apps.classify import evaluation

        setup_a, setup_b = compare_setups(args)
        evaluation.compare(setup_a, setup_b, seeds=args.seeds, alpha=args.alpha, dataset=args.dataset,
                           limit=args.limit, val_fraction=args.val_fraction, split_seed=args.seed, out=args.out,
                           name_a=args.a or "shared flags", name_b=args.b or "shared flags")
    elif args.command == "transfer":
        app.transfer(args.backbone, dataset=args.dataset, mode=args.mode, fine_tune_layers=args.fine_tune_layers,
                     epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                     optimizer=args.optimizer, out=args.out, seed=args.seed, limit=args.limit,
                     val_fraction=args.val_fraction, patience=args.patience)
        print(f"run folder: {args.out}; next: python -m apps.classify evaluate --out {args.out}")
    elif args.command == "study":
        from apps.classify import studies

        start = time.time()
        pngs = []
        for name in (STUDIES if args.name == "all" else [args.name]):
            print(f"== study {name}: {STUDIES[name]}")
            pngs += studies.run(name, out=args.out, small=args.small, seed=args.seed)["pngs"]
        print(f"study {args.name} finished in {time.time() - start:.0f} s; PNG files:")
        for png in pngs:
            print(f"  {png}")
    elif args.command == "ensemble":
        app.ensemble(args.runs, out=args.out)
        print(f"run folder: {args.out}; next: python -m apps.classify evaluate --out {args.out}")
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
        print(f"  {'model:':<16}{os.path.join(args.out, 'model.keras')}")
        print(f"  {'SavedModel:':<16}{exported['saved_model']}")
        for kind, path in exported["tflite"].items():
            print(f"  {'TFLite ' + kind + ':':<16}{path}")
        for png in ("learning_curves.png", "confusion_matrix.png", "roc.png", "test_predictions.png"):
            print(f"  {'PNG:':<16}{os.path.join(args.out, png)}")


if __name__ == "__main__":
    run_cli(main, prog="apps.classify")
