"""`classify search`: which training recipe wins for one model at its budget, judged on the validation split only.

A recipe is a name and a few TrainConfig overrides. Each (recipe, seed) pair is a trial, and a trial is exactly
a `classify train`: TrainConfig's defaults < the model's budget (budgets.py) < the recipe < the flags typed
(--epochs, --limit) and the seed, trained by the app's own `app.train` into <run>/<recipe>-seed<k>/, so a killed
trial resumes in its folder as `train` resumes. Every trial is scored on the same validation images (the split
carved with --seed); the training seed k changes the initial weights, the shuffling and the augmentation.

After each trial one JSON line joins <run>/search.jsonl: the recipe, its overrides, the seed, the validation
accuracy (last epoch, best epoch, every epoch), the validation loss and the training seconds. Rerunning the
command reuses the trials it finds there and trains only the missing ones. The winner has the highest mean
validation accuracy over the seeds (a tie: the faster recipe); a table, search.png (validation accuracy by
epoch) and search.json summarize the search, and the winner is printed as the budgets.py line to paste.

The test split is never loaded: the search reads the training images only (`load_train_and_validation`), and
the dataset it trains on has no test split at all. The test split judges the chosen recipe once, afterwards,
with `classify evaluate` on the run `train` makes with the new budget; a recipe chosen by its test accuracy
would make that figure optimistic.

No TensorFlow import at the top: the command line checks the space (a bad one is one line) before TensorFlow
starts.
"""

import json
import os
import re
import time
from argparse import Namespace
from typing import NamedTuple

from apps.classify.budgets import BUDGETS, COMMON, budget
from apps.classify.config import DATA_KEYS, RECIPE_KEYS, TrainConfig
from core.checkpoints import write_json_atomically
from core.cli import check_values, config_dict, resolve_config
from core.errors import UserError, first_line

LOG_FILE = "search.jsonl"
SUMMARY_FILE = "search.json"
PNG_FILE = "search.png"


class Recipe(NamedTuple):
    name: str
    overrides: dict


# The candidates for the default model (vgg: width 0.5, 8 epochs) at its budget: its recipe now, the shared
# Adam recipe of budgets.COMMON, and one change at a time from those. Each recipe names every setting it relies
# on (optimizer, rate, L2, dropout), so it means the same on top of any model's budget.
NESTEROV = dict(optimizer="nesterov", learning_rate=0.2, l2=2.5e-4, dropout=0.3)
ADAM = dict(optimizer="adam", learning_rate=2e-3, l2=0.0, dropout=None)  # dropout None: the model's own
DEFAULT_SPACE = (
    Recipe("nesterov-0.2", NESTEROV),  # vgg's budget now
    Recipe("nesterov-0.1", {**NESTEROV, "learning_rate": 0.1}),
    Recipe("nesterov-0.05", {**NESTEROV, "learning_rate": 0.05}),
    Recipe("nesterov-0.2-no-smoothing", {**NESTEROV, "label_smoothing": 0.0}),
    Recipe("adam-2e-3", ADAM),  # COMMON's recipe
    Recipe("adam-4e-3-dropout-0.3", {**ADAM, "learning_rate": 4e-3, "dropout": 0.3}),
    Recipe("adam-2e-3-crop", {**ADAM, "augment": "flip,crop"}),
)

# What a recipe may change: the training recipe. Not the data (every trial is scored on the same validation
# images; --limit and --seed set it for all) and not the model (--model: the recipes compete for one model).
SETTINGS = tuple(k for k in RECIPE_KEYS if k != "model")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # a recipe's name is part of its trials' folder names


# --------------------------------------------------------------------------
# The search space: checked whole before anything trains.


def read_space(path=None):
    """The recipes of the JSON file `path` (a list of {"name": ..., "overrides": {...}}), or the default
    space when None; a mistake in any of them is one line."""
    if path is None:
        return check_space(DEFAULT_SPACE, "the default space")
    entries = _read_json(path)
    shape = 'a JSON list of {"name": ..., "overrides": {...}} objects'
    if not isinstance(entries, list) or not entries:
        raise UserError(f"{path} should be {shape}, not {_describe_json(entries)}")
    recipes = []
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or set(entry) != {"name", "overrides"}:
            raise UserError(f"{path}: recipe {number} should be an object with exactly the keys name and overrides, "
                            f"not {_describe_json(entry)}")
        recipes.append(Recipe(entry["name"], entry["overrides"]))
    return check_space(recipes, path)


def _read_json(path):
    """The JSON value in `path`, or one line saying why not (as core.training.read_json, which would start
    TensorFlow before the space is checked)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror or error}") from None
    except ValueError as error:  # not UTF-8, not JSON
        raise UserError(f"corrupt {path}: {first_line(error)}; it should be a JSON list of recipes") from None


def _describe_json(value):
    return "an empty list" if value == [] else f"a JSON {type(value).__name__}: {json.dumps(value)[:60]}"


def check_space(recipes, where):
    """The recipes with their overrides checked as the flags are (names, types, ranges, choices)."""
    checked, seen = [], set()
    for name, overrides in recipes:
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise UserError(f"{where}: recipe name {name!r} should be letters, digits, '.', '-' or '_' "
                            f"(it names the trials' folders)")
        if name in seen:
            raise UserError(f"{where}: two recipes are named {name!r}")
        seen.add(name)
        if not isinstance(overrides, dict):
            raise UserError(f"{where}: recipe {name!r}: overrides should be a JSON object of training settings, "
                            f"not {_describe_json(overrides)}")
        for key in overrides:
            _check_key(key, f"{where}: recipe {name!r}")
        checked.append(Recipe(name, check_values(TrainConfig, overrides, f"{where}: recipe {name!r}")))
    return tuple(checked)


def _check_key(key, where):
    if key in SETTINGS:
        return
    if key in (*DATA_KEYS, "model"):
        raise UserError(f"{where}: {key} is the same for every recipe (search's --{key.replace('_', '-')}), "
                        f"not a recipe's setting")
    raise UserError(f"{where}: unknown setting {key!r}; a recipe sets some of: {', '.join(SETTINGS)}")


# --------------------------------------------------------------------------
# The trials: `classify train`'s settings, on the training images only.


def trial_config(search, recipe, seed):
    """What `classify train --model M [--epochs N] [--limit N] --seed K` would train with the recipe's
    settings typed too: TrainConfig's defaults < the model's budget < the recipe < the flags typed."""
    typed = dict(model=search.model, epochs=search.epochs, limit=search.limit, seed=seed)
    return resolve_config(TrainConfig, Namespace(**{k: v for k, v in typed.items() if v is not None}),
                          base={**budget(search.model), **recipe.overrides})


def trial_folder(run, recipe, seed):
    return os.path.join(run, f"{recipe.name}-seed{seed}")


def load_train_and_validation(config):
    """The training and validation images of `config.dataset`, split exactly as `classify train` splits them,
    and no test split: the dataset's `test` is None (Fashion-MNIST's test files are never opened)."""
    from core import data

    return data.load_dataset(config.dataset, val_fraction=config.val_fraction, seed=config.seed, limit=config.limit,
                             test=False)


def check_trials(configs):
    """`app.train`'s own early checks (the model's name, the choices, the augmentations, the ranges) for every
    trial, so a bad recipe fails before the first trial trains, not hours later."""
    import dataclasses

    from apps.classify import recipes
    from apps.classify.models import MODELS

    for config in configs:
        MODELS.get(config.model)
        recipes.check_options(dataclasses.asdict(config))


def train_trial(config, images, folder):
    """Train one trial with `classify train`'s function; its validation figures, or the line that says it
    diverged (a rate too high is a result of the search, not a reason to stop it)."""
    from apps.classify import app

    try:
        app.train(config, run=folder, images=images)
    except UserError as error:
        if not str(error).startswith("training stopped:"):  # core.training.StopOnNaN's message: a NaN loss
            raise
        return dict(diverged=str(error))
    return validation_figures(folder)


def validation_figures(folder):
    """The validation accuracy of every epoch (the run's history.csv), the last epoch's loss, and the
    training time (summed across resumes)."""
    import numpy as np

    from apps.classify.models import MAIN_OUTPUT
    from core import plots, results

    history = plots.read_history(os.path.join(folder, "history.csv"))
    accuracy = next(history[k] for k in ("val_accuracy", f"val_{MAIN_OUTPUT}_accuracy") if k in history)
    curve = [round(float(a), 6) for a in accuracy]
    best = int(np.argmax(curve))
    return dict(val_accuracy=curve[-1], best_val_accuracy=curve[best], best_epoch=best + 1,
                val_loss=round(float(history["val_loss"][-1]), 6), val_accuracy_by_epoch=curve,
                training_seconds=results.training_seconds(folder))


# --------------------------------------------------------------------------
# search.jsonl: one line per finished trial, rewritten whole through a temporary file, so a kill never
# leaves half a line behind.


def read_log(path):
    """The records of search.jsonl; a line that is not a trial's JSON record (a hand edit, or an append cut
    short by a kill in another writer) is skipped with a warning, and its trial trains again."""
    if not os.path.exists(path):
        return []
    records = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or not {"recipe", "seed", "config"} <= set(record):
                    raise ValueError("not a trial's record")
            except ValueError as error:
                if line.strip():
                    print(f"warning: {path} line {number} is skipped ({first_line(error)}); its trial trains again")
                continue
            records.append(record)
    return records


def append_to_log(path, records, record):
    """Add `record` to `records` and write them all to `path` through a temporary file."""
    records.append(record)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    os.replace(tmp, path)


def finished_trial(records, run, recipe, seed, config):
    """The record of this trial from an earlier run of the search, or None; a record of the same trial with
    other settings (another --epochs, a recipe changed in the space file) is refused in one line."""
    setting = json.loads(json.dumps(config_dict(config)))
    for record in records:
        if record["recipe"] == recipe.name and record["seed"] == seed:
            if record["config"] != setting:
                raise _other_settings(run, recipe, seed, record["config"], setting)
            return record
    return None


def check_unfinished_trial(folder, run, recipe, seed, config):
    """A trial folder a kill left behind resumes only with the same settings (`train` would mix them)."""
    path = os.path.join(folder, "config.json")
    if os.path.exists(path):
        from core import training

        recorded = training.load_config(folder)
        setting = config_dict(config)
        if {k: recorded.get(k) for k in setting} != setting:
            raise _other_settings(run, recipe, seed, recorded, setting)


def _other_settings(run, recipe, seed, old, new):
    changed = ", ".join(f"{k}={old.get(k)!r}, not {v!r}" for k, v in new.items() if old.get(k) != v)
    return UserError(f"{run} holds a search with other settings ({recipe.name}-seed{seed}: {changed}); give this "
                     f"search its own folder with --run DIR, or delete it")


# --------------------------------------------------------------------------
# The search.


def run(search, recipes, *, run="runs/classify/search"):
    """Train every (recipe, seed) of `search` (a SearchConfig) that search.jsonl in `run` lacks, then rank the
    recipes by mean validation accuracy; returns the summary (what search.json holds)."""
    seeds = range(search.seed, search.seed + search.seeds)
    trials = [(recipe, seed, trial_config(search, recipe, seed)) for recipe in recipes for seed in seeds]
    check_trials([config for _, _, config in trials])
    os.makedirs(run, exist_ok=True)
    log = os.path.join(run, LOG_FILE)
    records, finished, images = read_log(log), [], None
    start = time.time()
    for number, (recipe, seed, config) in enumerate(trials, 1):
        what = f"search: [{number}/{len(trials)}] {recipe.name}, seed {seed}"
        record = finished_trial(records, run, recipe, seed, config)
        if record is None:
            folder = trial_folder(run, recipe, seed)
            check_unfinished_trial(folder, run, recipe, seed, config)
            print(f"{what}: training in {folder}")
            if images is None:  # the same validation images for every trial: carved with --seed
                images = load_train_and_validation(trial_config(search, recipe, search.seed))
            record = dict(recipe=recipe.name, overrides=recipe.overrides, seed=seed, split_seed=search.seed,
                          config=config_dict(config), **train_trial(config, images, folder))
            append_to_log(log, records, record)
        else:
            what += ": reused"
        print(f"{what}: {_describe_trial(record)}")
        finished.append(record)
    summary = summarize(search, recipes, finished, run)
    print(f"search finished in {time.time() - start:.0f} s")
    report(summary, run)
    return summary


def _describe_trial(record):
    if "diverged" in record:
        return f"diverged ({record['diverged']})"
    return (f"validation accuracy {record['val_accuracy']:.4f} (best {record['best_val_accuracy']:.4f} at epoch "
            f"{record['best_epoch']}), {record['training_seconds'] or 0:.0f} s")


def summarize(search, recipes, records, run):
    """One row per recipe, best first: mean ± std of the last epoch's validation accuracy over the seeds (the
    best epoch's would be picked on the very images it is scored on), the training seconds per trial; a
    recipe that diverged on any seed ranks last. The winner's budget entry, and what the search ran with."""
    import numpy as np

    from core import results

    rows = []
    for recipe in recipes:
        trials = [r for r in records if r["recipe"] == recipe.name]
        scored = [r for r in trials if "diverged" not in r]
        accuracies = [r["val_accuracy"] for r in scored]
        rows.append(dict(
            recipe=recipe.name, overrides=recipe.overrides, seeds=[r["seed"] for r in trials],
            diverged=len(trials) - len(scored), val_accuracy=accuracies,
            val_accuracy_mean=float(np.mean(accuracies)) if accuracies else None,
            val_accuracy_std=float(np.std(accuracies, ddof=1)) if len(accuracies) > 1 else 0.0,
            best_val_accuracy_mean=float(np.mean([r["best_val_accuracy"] for r in scored])) if scored else None,
            seconds_per_trial=float(np.mean([r["training_seconds"] or 0.0 for r in scored])) if scored else None,
            val_accuracy_by_epoch=[r.get("val_accuracy_by_epoch", []) for r in trials]))
    rows.sort(key=lambda row: (row["diverged"] > 0, -(row["val_accuracy_mean"] or 0.0), row["seconds_per_trial"] or 0))
    winner = rows[0]
    if winner["diverged"]:
        raise UserError(f"every recipe diverged on some seed; no winner (see {os.path.join(run, LOG_FILE)})")
    return dict(winner=winner["recipe"], budget_entry=budget_entry(search.model, winner["overrides"]),
                split="validation", table=rows,
                run_with=dict(model=search.model, seeds=list(range(search.seed, search.seed + search.seeds)),
                              split_seed=search.seed, epochs=search.epochs, limit=search.limit,
                              space=search.space or "the default space (apps/classify/search.py)",
                              dataset=TrainConfig().dataset, val_fraction=TrainConfig().val_fraction),
                written=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), environment=results.environment())


def budget_entry(model, overrides):
    """The model's BUDGETS entry with the recipe in it, less what COMMON (else TrainConfig) gives anyway."""
    defaults = config_dict(TrainConfig())
    entry = {**BUDGETS.get(model, dict(epochs=2)), **overrides}
    return {k: v for k, v in entry.items() if v != COMMON.get(k, defaults[k])}


def budget_line(model, entry):
    """The entry as budgets.py writes it: `    "vgg": dict(epochs=8, optimizer="nesterov", ...),`."""
    literal = lambda value: json.dumps(value) if isinstance(value, str) else repr(value)  # budgets.py's quotes
    return f'    "{model}": dict(' + ", ".join(f"{k}={literal(v)}" for k, v in entry.items()) + "),"


def report(summary, run):
    """The table, the winner's budgets.py line, search.json and search.png."""
    print(f"\nrecipes of {summary['run_with']['model']}, best first (validation accuracy of the last epoch, "
          f"mean ± std over the seeds; never the test split):")
    width = max(len(row["recipe"]) for row in summary["table"])
    print(f"  {'recipe':<{width}}  {'validation accuracy':>19}  {'s per trial':>11}")
    for row in summary["table"]:
        if row["diverged"]:
            accuracy = f"diverged ({row['diverged']} of {len(row['seeds'])})"
        else:
            accuracy = f"{row['val_accuracy_mean']:.4f} ± {row['val_accuracy_std']:.4f}"
        seconds = "" if row["seconds_per_trial"] is None else f"{row['seconds_per_trial']:.0f}"
        print(f"  {row['recipe']:<{width}}  {accuracy:>19}  {seconds:>11}")
    run_with = summary["run_with"]
    print(f"\nwinner: {summary['winner']}; the line to paste into BUDGETS in apps/classify/budgets.py:\n"
          f"{budget_line(run_with['model'], summary['budget_entry'])}")
    shortened = " ".join(f"--{k} {run_with[k]}" for k in ("epochs", "limit") if run_with[k] is not None)
    if shortened:
        print(f"  (this search ran with {shortened}, not at the model's whole budget on the whole training set: "
              f"rerun it without them before pasting)")
    summary_path = os.path.join(run, SUMMARY_FILE)
    write_json_atomically(summary_path, summary)
    png = curves_png(summary, os.path.join(run, PNG_FILE))
    print(f"wrote {summary_path}\nwrote {os.path.join(run, LOG_FILE)}\nPNG: {png}")


def curves_png(summary, path):
    """Validation accuracy by epoch: each seed thin, the mean over seeds thick, one colour per recipe."""
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    import numpy as np

    from core import plots

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for colour, row in zip(plt.cm.tab10.colors * 3, summary["table"]):
        curves = [c for c in row["val_accuracy_by_epoch"] if c]
        for curve in curves:
            ax.plot(np.arange(1, len(curve) + 1), curve, "-", color=colour, alpha=0.3, lw=1)
        if curves:
            longest = max(len(c) for c in curves)
            mean = [np.mean([c[e] for c in curves if len(c) > e]) for e in range(longest)]
            ax.plot(np.arange(1, longest + 1), mean, "o-", color=colour, lw=2, ms=4, label=row["recipe"])
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel("validation accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{summary['run_with']['model']}: validation accuracy by epoch (winner: {summary['winner']})",
                 fontsize=10)
    return plots.save_figure(fig, path)
