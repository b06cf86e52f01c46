"""Command line: python -m apps.classify VERB ...

  train     train a model into runs/classify/<model> (rerun the same command to resume)
  evaluate  test accuracy, per-class figures, ROC; PNGs in the run folder
  export    saved_models/classify_<model>/<version>/ for TF Serving + TFLite, parity-checked
  predict   classify PNG/JPEG files
  demo      train + evaluate + export of one model at its budget (by default the default model: `make demo`)
  zoo, cv, compare, transfer, ensemble, study   the experiments beyond one model (docs/classify.md)
  search    compare training recipes over seeds on the validation split: the winner is a budgets.py line
"""

import argparse
import os
import shlex
import time

from apps.classify.budgets import DEFAULT_MODEL, budget
from apps.classify.config import DATA_KEYS, MODEL_NAMES, SearchConfig, TrainConfig, TransferConfig
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

APP = "classify"
ZOO_BUDGET = dict(epochs=2, limit=2000, batch_size=64)  # every model the same small budget: minutes, not hours
STUDIES = {  # apps/classify/studies.py
    "multitask": "independent towers vs hard sharing (one trunk, two heads) vs soft sharing "
                 "(λ·Σ‖W_fine − W_coarse‖²): fine-task accuracy with few fine labels, and the penalty vs λ",
    "transfer": "a Fashion-MNIST backbone transferred to MNIST digits (frozen or fine-tuned) vs training "
                "from scratch: test accuracy vs the number of labelled examples",
    "imbalance": "an imbalanced training set: no handling vs class weights vs over-sampling: macro recall, "
                 "macro F1 and the recall of the rare classes",
}
BUDGET_NOTE = (f"--model M starts from M's budget (apps/classify/budgets.py: a few settings per model) on top "
               f"of the defaults shown; --config FILE and the flags typed replace both. The default model "
               f"{DEFAULT_MODEL}'s budget: "
               + ", ".join(f"{k}={v}" for k, v in budget(DEFAULT_MODEL).items()) + ".")


def verb_folder(verb):
    """The folder of an experiment verb's runs and figures: runs/classify/<verb>."""
    return os.path.join(RUNS, APP, verb)


def add_run_flag(p, default, what, *, config=False):
    """--run DIR of an experiment verb (default runs/classify/<verb>), and --config FILE where it trains."""
    p.add_argument("--run", default=default, metavar="DIR", help=f"{what} (default: {default})")
    if config:
        p.add_argument("--config", default=None, metavar="FILE",
                       help="a config.json (e.g. a run's) whose values replace the defaults; flags typed here "
                            "replace its values")


def add_training_verbs(commands):
    for name, help_text in [("train", "train a model (rerun the same command to resume)"),
                            ("demo", "train, evaluate and export a model (by default the default model, "
                                     "at its budget: what `make demo` runs)")]:
        p = commands.add_parser(name, help=help_text, description=f"{help_text}. {BUDGET_NOTE}")
        add_config_flags(p, TrainConfig)
        add_run_flags(p, app=APP)
        if name == "demo":
            p.add_argument("--export-dir", default="saved_models", metavar="DIR",
                           help="root of the exports (default: saved_models)")


def add_reading_verbs(commands):
    p = commands.add_parser("evaluate", help="test accuracy, top-k error, per-class precision/recall/F1, "
                                             "one-vs-rest ROC AUC; confusion-matrix and ROC PNGs in the run folder")
    add_trained_run_flags(p, app=APP, models=MODEL_NAMES, default_model=DEFAULT_MODEL)
    p.add_argument("--limit", type=int, default=None, help="evaluate on at most this many test examples "
                                                           "(default: the run's own limit)")

    p = commands.add_parser("export", help="SavedModel for TF Serving (saved_models/classify_<model>/<version>/) "
                                           "and TFLite files, parity-checked")
    add_trained_run_flags(p, app=APP, models=MODEL_NAMES, default_model=DEFAULT_MODEL)
    add_export_flags(p)

    p = commands.add_parser("predict", help="classify PNG/JPEG files")
    p.add_argument("images", nargs="+", help="image files")
    add_trained_run_flags(p, app=APP, models=MODEL_NAMES, default_model=DEFAULT_MODEL)
    p.add_argument("--saved-model", default=None, metavar="DIR",
                   help="use this exported version folder instead of the run (default: none)")
    p.add_argument("--resize", action="store_true", help="resize images to the model's input size")
    p.add_argument("--top", type=int, default=3, help="how many classes to print (default: 3)")


def add_experiment_verbs(commands):
    p = commands.add_parser("zoo", help="train and evaluate every model on one budget; a Markdown table",
                            description="Every model with the same settings: train's defaults, except "
                                        + ", ".join(f"{k}={v}" for k, v in ZOO_BUDGET.items()) + ".")
    add_config_flags(p, TrainConfig, skip=("model",))
    add_run_flag(p, verb_folder("zoo"), "one run folder per model, and zoo.md", config=True)
    p.add_argument("--models", default=None, help="comma-separated model names (default: all but mlp)")
    p.add_argument("--table", default=None, help="where to write the Markdown table (default: RUN/zoo.md)")
    p.add_argument("--full", action="store_true",
                   help="each model with its own budget (apps/classify/budgets.py) on the whole dataset; "
                        "the training flags above are then ignored, except --dataset, --seed, --models")

    p = commands.add_parser("cv", help="stratified k-fold cross-validation on the training data: "
                                       "accuracy per fold and mean ± std")
    add_config_flags(p, TrainConfig)
    add_run_flag(p, verb_folder("cv"), "one run folder per fold, cv.json and cv.csv", config=True)
    p.add_argument("--folds", type=int, default=5, help="K, the number of folds (default: 5)")

    p = commands.add_parser("compare", help="two training setups over N seeds on the same split: "
                                            "mean ± std test accuracy, paired t-test and Wilcoxon p-values")
    add_config_flags(p, TrainConfig)
    add_run_flag(p, verb_folder("compare"), "the runs of each seed, compare.json and compare.png", config=True)
    p.add_argument("--a", default="", help='training flags of setup A on top of the others, e.g. "--model lenet5"')
    p.add_argument("--b", default="", help='training flags of setup B, e.g. "--model vgg --width 0.5"')
    p.add_argument("--models", default=None, help="shortcut: M1,M2 means --a '--model M1' --b '--model M2'")
    p.add_argument("--seeds", type=int, default=5, help="N, training seeds 0..N-1 (default: 5)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default: 0.05)")

    p = commands.add_parser("transfer", help="transfer a trained backbone to another dataset")
    add_config_flags(p, TransferConfig)
    add_run_flag(p, verb_folder("transfer"), "the run folder", config=True)

    p = commands.add_parser("ensemble", help="average the probabilities of several trained runs")
    p.add_argument("runs", nargs="+", help="run folders (same dataset)")
    add_run_flag(p, verb_folder("ensemble"), "the ensemble's run folder")

    p = commands.add_parser("study", help="measured effect of multi-task sharing, transfer learning or "
                                          "imbalance handling on a small training set: a PNG and a table",
                            description="; ".join(f"{k}: {v}" for k, v in STUDIES.items()))
    p.add_argument("name", choices=[*STUDIES, "all"], help="the study (all: one after the other)")
    p.add_argument("--small", action="store_true", help="reduced size: a quick demo instead of minutes")
    p.add_argument("--seed", type=int, default=0, help="data split and first training seed (default: 0)")
    add_run_flag(p, verb_folder("study"), "root of the study folders")


def add_search_verb(commands):
    p = commands.add_parser(
        "search", help="compare training recipes over seeds on the validation split (never the test split); "
                       "the winner as the line for apps/classify/budgets.py, search.png",
        description="Each recipe (a few training settings) trains once per seed with train's settings: the "
                    "defaults < the model's budget < the recipe < --epochs/--limit. A rerun reuses the finished "
                    "trials. The default space: apps/classify/search.py.")
    add_config_flags(p, SearchConfig)
    add_run_flag(p, verb_folder("search"), "one run folder per recipe and seed, search.jsonl, search.json and "
                                           "search.png")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m apps.classify", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="VERB")
    add_training_verbs(commands)
    add_reading_verbs(commands)
    add_experiment_verbs(commands)
    add_search_verb(commands)
    return parser.parse_args(argv)


def train_config(args):
    """train's settings: the defaults < the model's budget < --config FILE < the flags typed. The model
    is the typed one, else the file's, else the default."""
    model = resolve_config(TrainConfig, args).model
    return resolve_config(TrainConfig, args, base=budget(model))


def compare_setups(args):
    """The two setups of `compare` (TrainConfigs): the shared flags, each updated by its --a/--b flags
    (parsed like `train`'s, without the data flags: both setups train on the same data)."""
    if args.models:
        names = [m.strip() for m in args.models.split(",")]
        if len(names) != 2 or args.a or args.b:
            raise UserError("--models takes exactly two comma-separated names (M1,M2) and replaces --a/--b")
        args.a, args.b = f"--model {names[0]}", f"--model {names[1]}"
    if args.a == args.b:
        raise UserError("compare needs two different setups: give --a and --b (or --models M1,M2)")
    shared = resolve_config(TrainConfig, args)
    return [_parse_setup(flags, shared) for flags in (args.a, args.b)]


def _parse_setup(flags, shared):
    """One setup: `flags` (train's flags less the data ones) on top of the shared config."""
    import dataclasses

    def fail(message):
        raise UserError(f"in --a/--b: {message}")

    parser = argparse.ArgumentParser(prog="compare --a/--b", add_help=False)
    parser.error = fail
    add_config_flags(parser, TrainConfig, skip=DATA_KEYS)
    try:
        typed = parser.parse_args(shlex.split(flags))
    except ValueError as error:  # shlex: an unbalanced quote
        raise UserError(f"in --a/--b: {error}") from None
    return resolve_config(TrainConfig, typed, base=dataclasses.asdict(shared))


def run_demo(args, config, run):
    from apps.classify import app

    start = time.time()
    app.train(config, run=run, strategy=args.strategy)
    report = app.evaluate(run)
    exported = app.export_run(run, export_dir=args.export_dir)
    print(f"\ndemo finished in {time.time() - start:.0f} s; test accuracy {report['accuracy']:.4f}")
    print(f"  {'model:':<16}{os.path.join(run, 'model.keras')}")
    print(f"  {'SavedModel:':<16}{exported['saved_model']}")
    for kind, path in exported["tflite"].items():
        print(f"  {'TFLite ' + kind + ':':<16}{path}")
    for png in ("learning_curves.png", "confusion_matrix.png", "roc.png", "test_predictions.png"):
        print(f"  {'PNG:':<16}{os.path.join(run, png)}")


def run_experiment(args):
    """zoo, cv, compare, transfer, ensemble, study."""
    from apps.classify import app, evaluation

    if args.command == "zoo":
        models = [m.strip() for m in args.models.split(",")] if args.models else None
        if args.full:
            shared = resolve_config(TrainConfig, args)
            app.zoo_full(TrainConfig(dataset=shared.dataset, seed=shared.seed), models=models, run=args.run,
                         table=args.table)
        else:
            app.zoo(resolve_config(TrainConfig, args, base=ZOO_BUDGET), models=models, run=args.run,
                    table=args.table)
    elif args.command == "cv":
        evaluation.cross_validate(resolve_config(TrainConfig, args), folds=args.folds, run=args.run)
    elif args.command == "compare":
        setup_a, setup_b = compare_setups(args)
        evaluation.compare(setup_a, setup_b, seeds=args.seeds, alpha=args.alpha, run=args.run,
                           name_a=args.a or "shared flags", name_b=args.b or "shared flags")
    elif args.command == "transfer":
        app.transfer(resolve_config(TransferConfig, args), run=args.run)
        print(f"run folder: {args.run}; next: python -m apps.classify evaluate --run {args.run}")
    elif args.command == "ensemble":
        app.ensemble(args.runs, run=args.run)
        print(f"run folder: {args.run}; next: python -m apps.classify evaluate --run {args.run}")
    elif args.command == "study":
        run_studies(args)


def run_studies(args):
    if args.seed < 0:  # as TrainConfig's seed: one line before any work
        raise UserError(f"--seed must be at least 0, got {args.seed}")
    from apps.classify import studies

    start = time.time()
    pngs = []
    for name in (STUDIES if args.name == "all" else [args.name]):
        print(f"== study {name}: {STUDIES[name]}")
        pngs += studies.run(name, out=args.run, small=args.small, seed=args.seed)["pngs"]
    print(f"study {args.name} finished in {time.time() - start:.0f} s; PNG files:")
    for png in pngs:
        print(f"  {png}")


def run_search(args):
    config = resolve_config(SearchConfig, args)
    from apps.classify import search  # no TensorFlow yet: a bad space file is one line at once

    search.run(config, search.read_space(config.space), run=args.run)


def main(argv=None):
    args = parse_args(argv)
    if args.command in ("train", "demo"):
        config = train_config(args)  # bad values are one line before TensorFlow starts
        run = run_folder(APP, config.model, args.run)
        from apps.classify import app  # after parsing, so --help is instant

        if args.command == "demo":
            return run_demo(args, config, run)
        app.train(config, run=run, strategy=args.strategy)
        print(f"run folder: {run} (config.json, model.keras, history.csv, learning_curves.png, logs/); "
              f"next: python -m apps.classify evaluate --run {run}")
    elif args.command in ("evaluate", "export", "predict"):
        run = None if getattr(args, "saved_model", None) else trained_run_folder(APP, args, DEFAULT_MODEL)
        from apps.classify import app

        if args.command == "evaluate":
            app.evaluate(run, limit=args.limit)
        elif args.command == "export":
            app.export_run(run, export_dir=args.export_dir, version=args.version)
        else:
            app.predict(args.images, run=run, saved_model=args.saved_model, resize=args.resize, top=args.top)
    elif args.command == "search":
        run_search(args)
    else:
        run_experiment(args)


if __name__ == "__main__":
    run_cli(main, prog="apps.classify")
