"""Command line: python -m apps.sequence {train,evaluate,export,predict} --task TASK [--model NAME] [--run DIR] ...
              python -m apps.sequence {vanishing,hard-attention} [--run DIR] [--seed N] [--small]

tasks (--task):
  charlm     character-level language model on the fortunes; predict continues prompts (greedy, beam, sample)
  textclass  category of a quote (--model bag, lstm, bigru, transformer); predict prints the labels of texts
  dates      human-written dates -> ISO 8601 (--model bahdanau, transformer); predict prints ISO dates
  caption    captions of multi-object scenes (CNN + GRU with attention); predict captions image files

`python -m apps.sequence VERB --task TASK --help` lists that task's flags and their defaults.
"""

import argparse
import dataclasses
import os

from apps.sequence.config import CONFIGS
from core.cli import add_config_flags, add_run_flags, resolve_config, run_folder
from core.errors import UserError, run_cli

APP = "sequence"
PROG = "python -m apps.sequence"
TASKS = {
    "charlm": "character-level language model on the fortunes",
    "textclass": "category of a quote",
    "dates": "human-written dates -> ISO 8601",
    "caption": "image captioning of multi-object scenes",
}
VERBS = {
    "train": "train a model of --task (rerun the same command to resume)",
    "evaluate": "scores of the run's model on held-out data (and PNGs in the run folder)",
    "export": "SavedModel + TFLite of the run's model, parity-checked: saved_models/sequence_<task>[_<model>]/",
    "predict": "the run's model on your inputs: text, labels, ISO dates or captions",
}
# experiments: verb -> what it shows; apps/sequence/<verb with _>.py writes its PNGs and table into --run
EXPERIMENTS = {
    "vanishing": "‖∂L/∂x_t‖ over time steps for Elman, LSTM and GRU at initialisation and after a little training "
                 "on remember-the-first-symbol; tape vs finite differences",
    "hard-attention": "translated Fashion-MNIST through one 28x28 glimpse: hard attention (sampled positions, "
                      "REINFORCE with a learned baseline) vs soft attention vs random glimpses",
}


def run_name(task, model=None):
    """The default run folder's and the export's name: <task> or <task>_<model>."""
    return f"{task}_{model}" if model else task


def default_model(task):
    return getattr(CONFIGS[task](), "model", None)


def model_choices(task):
    return next(f.metadata["choices"] for f in dataclasses.fields(CONFIGS[task]) if f.name == "model")


# ------------------------------------------------------------------ parsers
def top_parser():
    """Only for the top-level --help and a missing or unknown verb."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, help_text in {**VERBS, **EXPERIMENTS}.items():
        verbs.add_parser(name, help=help_text)
    return parser


def verb_parser(verb, task):
    """The parser of `verb` for `task` (None: only --task, so that `VERB --help` says how to go on)."""
    parser = argparse.ArgumentParser(
        prog=f"{PROG} {verb}", description=VERBS[verb] + ("" if task else f". Tasks: {', '.join(TASKS)}; "
                                                          f"`{verb} --task TASK --help` lists the task's flags."))
    parser.add_argument("--task", required=True, choices=TASKS, metavar="TASK",
                        help=f"{', '.join(TASKS)}" + (f" (here: {task}, {TASKS[task]})" if task else ""))
    if task is None:
        return parser
    folder = f"runs/{APP}/{run_name(task, '<model>' if default_model(task) else None)}"
    if verb == "train":
        add_config_flags(parser, CONFIGS[task], title=f"{task} settings")
        add_run_flags(parser, app=APP, default_run=folder)
    else:
        if default_model(task):
            parser.add_argument("--model", default=default_model(task), choices=model_choices(task), metavar="NAME",
                                help=f"names the default run folder: {', '.join(model_choices(task))} "
                                     f"(default: {default_model(task)})")
        parser.add_argument("--run", default=None, metavar="DIR",
                            help=f"the run folder of 'train --task {task}' (default: {folder})")
        VERB_FLAGS[verb](parser, task)
    return parser


def evaluate_flags(p, task):
    if task in ("textclass", "caption"):
        splits = ("train", "val", "test") if task == "textclass" else ("train", "validation", "test")
        p.add_argument("--split", default="test", choices=splits, help="(default: %(default)s)")
    if task in ("dates", "caption"):
        p.add_argument("--width", type=int, default=1, help="beam width; 1 = greedy (default: %(default)s)")
        p.add_argument("--limit", type=int, default=None, help="evaluate at most this many examples (default: all)")


def export_flags(p, task):
    name = run_name(task, "<model>" if default_model(task) else None)
    p.add_argument("--export-dir", default="saved_models", metavar="DIR",
                   help=f"root of the exports: DIR/sequence_{name}/<version>/ (default: %(default)s)")
    p.add_argument("--version", type=int, default=None, help="version number (default: the next free one)")
    if task == "charlm":
        p.add_argument("--length", type=int, default=200, help="characters the served model generates "
                                                               "(default: %(default)s)")


def predict_flags(p, task):
    if task == "charlm":
        p.add_argument("prompts", nargs="+", metavar="PROMPT", help="texts to continue")
        p.add_argument("--method", default="sample", choices=["greedy", "beam", "sample"],
                       help="decoding: temperature sampling, or greedy / beam search, which tend to loop "
                            "(default: %(default)s)")
        p.add_argument("--width", type=int, default=4, help="beam width (default: %(default)s)")
        p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (default: %(default)s)")
        p.add_argument("--length", type=int, default=200, help="characters to generate (default: %(default)s)")
        p.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    elif task == "textclass":
        p.add_argument("texts", nargs="+", metavar="TEXT", help="quotes to classify")
        p.add_argument("--saved-model", default=None, metavar="DIR",
                       help="use this exported version folder instead of the run (default: none)")
    elif task == "dates":
        p.add_argument("texts", nargs="+", metavar="TEXT", help="dates as people write them")
        p.add_argument("--width", type=int, default=1, help="beam width; 1 = greedy (default: %(default)s)")
    else:
        p.add_argument("images", nargs="*", metavar="IMAGE",
                       help="image files to caption (none: the first --count test scenes)")
        p.add_argument("--width", type=int, default=1, help="beam width; 1 = greedy (default: %(default)s)")
        p.add_argument("--count", type=int, default=8, help="test scenes to caption without image files "
                                                            "(default: %(default)s)")
        p.add_argument("--saved-model", default=None, metavar="DIR",
                       help="caption with this exported version folder instead of the run (default: none)")


VERB_FLAGS = {"evaluate": evaluate_flags, "export": export_flags, "predict": predict_flags}


def experiment_parser(verb):
    parser = argparse.ArgumentParser(prog=f"{PROG} {verb}", description=EXPERIMENTS[verb])
    parser.add_argument("--run", default=os.path.join("runs", APP, verb.replace("-", "_")), metavar="DIR",
                        help="folder of the PNGs and the table (default: %(default)s)")
    parser.add_argument("--small", action="store_true", help="reduced size: about a minute instead of several")
    parser.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    if verb == "hard-attention":
        parser.add_argument("--export-dir", default="saved_models", metavar="DIR",
                            help="root of the hard model's export; '' for none (default: %(default)s)")
    return parser


def task_of(verb, rest):
    """--task from the arguments of `verb` (None when absent), so that the verb's parser can be the task's."""
    pre = argparse.ArgumentParser(prog=f"{PROG} {verb}", add_help=False)
    pre.add_argument("--task", choices=TASKS, metavar="TASK")
    return pre.parse_known_args(rest)[0].task


# The smallest value of each number a verb takes (a one-line error, not argparse's usage + error).
MINIMUMS = {"seed": 0, "width": 1, "count": 1, "length": 1, "limit": 1, "version": 1}


def check_numbers(args):
    for name, minimum in MINIMUMS.items():
        value = getattr(args, name, None)
        if value is not None and value < minimum:
            raise UserError(f"--{name} must be at least {minimum}, got {value}")
    if getattr(args, "temperature", 1.0) <= 0:
        raise UserError(f"--temperature must be positive, got {args.temperature}")


def parse_args(argv=None):
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in {**VERBS, **EXPERIMENTS}:
        top_parser().parse_args(argv)  # the help, or argparse's error about the verb
    verb, rest = argv[0], argv[1:]
    if verb in EXPERIMENTS:
        args = experiment_parser(verb).parse_args(rest)
    else:
        # images and texts may come after options ("predict --task caption --run RUN a.png")
        args = verb_parser(verb, task_of(verb, rest)).parse_intermixed_args(rest)
    args.verb = verb
    check_numbers(args)
    return args


# ----------------------------------------------------------------- commands
def main(argv=None):
    args = parse_args(argv)
    if args.verb in EXPERIMENTS:
        return experiment(args)
    if args.verb == "train":
        return train(args)
    from apps.sequence import commands  # TensorFlow: after parsing

    run = run_folder(APP, run_name(args.task, getattr(args, "model", None)), args.run)
    return getattr(commands, f"{args.verb}_{args.task}")(args, run)


def train(args):
    config = resolve_config(CONFIGS[args.task], args)
    run = run_folder(APP, run_name(args.task, getattr(config, "model", None)), args.run)
    from apps.sequence import commands

    commands.TRAIN[args.task](config, run=run, strategy=args.strategy)
    print(f"run folder: {run}\nwrote {os.path.join(run, 'learning_curves.png')}")


def experiment(args):
    import importlib
    import time

    from core import training

    start = time.time()
    training.set_seed(args.seed)
    module = importlib.import_module(f"apps.sequence.{args.verb.replace('-', '_')}")
    print(f"== {args.verb}: {EXPERIMENTS[args.verb]}")
    options = {"export_dir": args.export_dir} if hasattr(args, "export_dir") else {}
    module.run(run=args.run, small=args.small, seed=args.seed, **options)
    print(f"{args.verb} finished in {time.time() - start:.0f} s; PNGs in {args.run}")


if __name__ == "__main__":
    run_cli(main, prog="apps.sequence")
