"""Studies: the measured effect of three ideas on a small training set, each a PNG and a table.

  multitask   a fine (10 classes) and a coarse (4 categories) Fashion-MNIST task with few fine labels:
              independent towers, hard sharing (one trunk, two heads) and soft sharing (two towers
              tied by λ·Σ‖W_fine − W_coarse‖²) for a sweep of λ (multitask.py).
  transfer    a LeNet-5 backbone trained on Fashion-MNIST, transferred to MNIST digits (frozen, or
              fine-tuned) at n labelled examples, against the same network trained from scratch:
              test accuracy vs n.
  imbalance   a training set whose classes keep a share ratio**(c/(K-1)) of their examples (the last
              ones rare): no handling, balanced class weights, over-sampling; macro recall and F1,
              and the recall of the rarest classes, on the balanced test split.

Every setup of a study gets the same budget: the same network, optimizer and number of optimizer
steps. The studies reuse the app's own pieces (`app.train`, `app.transfer`, `recipes.rebalance`,
`recipes.class_weights`); the runs they train are scratch folders, the PNGs and a JSON of the
figures land in <out>/<study>/.
"""

import dataclasses
import json
import os
import tempfile

import numpy as np

from apps.basics.common import print_table
from apps.classify import app, recipes
from apps.classify.models import main_head
from core import data, plots, training
from core.metrics import classification_report

DEFAULT_OUT = os.path.join("runs", "classify", "study")


def run(name, *, out=DEFAULT_OUT, small=False, seed=0):
    """Run study `name` (multitask, transfer, imbalance); returns its results, the PNG paths under 'pngs'."""
    recipes.check_choice("study", name, ("multitask", "transfer", "imbalance"))
    if name == "multitask":
        from apps.classify import multitask

        return multitask.run(out=out, small=small, seed=seed)
    return {"transfer": run_transfer, "imbalance": run_imbalance}[name](out=out, small=small, seed=seed)


def study_dir(out, name):
    return training.make_output_dir(os.path.join(out or DEFAULT_OUT, name))


def epochs_for(num_examples, batch_size, steps):
    """Epochs that make about `steps` optimizer steps on `num_examples`: the same budget in steps
    for training sets of different sizes (at least one epoch)."""
    return max(1, int(round(steps / max(1, -(-num_examples // batch_size)))))


def predictions(run_dir, dataset):
    """True labels and predicted classes of the run's best checkpoint on an unbatched pipeline."""
    labels, probabilities = app._predict_all(main_head(training.load_trained_model(run_dir)), dataset)
    return labels, probabilities.argmax(axis=1)


def write_json(folder, name, results):
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    return path


# --------------------------------------------------------------------------
# Transfer learning: how many labelled examples is a pretrained backbone worth?

# How each method trains: LeNet-5 from a random start, or `app.transfer` options. A new softmax head
# on frozen features is a linear model: it needs a larger rate than a whole network.
TRANSFER_METHODS = {"scratch": dict(learning_rate=1e-3),
                    "frozen features": dict(mode="feature", learning_rate=1e-2),
                    "fine-tuned": dict(mode="finetune", learning_rate=1e-3)}


def labelled_subset(images, n):
    """The dataset with only the first `n` training examples (a random sample: the training split is
    already shuffled); validation and test splits unchanged."""
    return dataclasses.replace(images, train=images.train.take(n), num_train=min(n, images.num_train))


def pretrain_backbone(run_dir, *, small, seed):
    """A quick LeNet-5 run on Fashion-MNIST: the source of the transferred features."""
    app.train(model="lenet5", dataset="fashion_mnist", epochs=2 if small else 3, batch_size=64,
              limit=3000 if small else 10000, seed=seed, run=run_dir)
    return run_dir


def transfer_curve(backbone, target, budgets, *, steps, seed=0, methods=None, scratch_dir):
    """Test accuracy of each method (default TRANSFER_METHODS) after training on the first n
    examples of `target`, for each n in `budgets`: {method: [accuracy per n]}. Every method trains
    for about `steps` Adam steps on batches of n/4 (8 to 32) and keeps its best checkpoint on the
    validation split (the same for all)."""
    methods = methods or TRANSFER_METHODS
    accuracy = {m: [] for m in methods}
    for n in budgets:
        images = labelled_subset(target, n)
        batch_size = max(8, min(32, images.num_train // 4))
        epochs = epochs_for(images.num_train, batch_size, steps)
        for method, options in methods.items():
            run_dir = os.path.join(scratch_dir, f"{method.replace(' ', '_')}_{n}")
            common = dict(epochs=epochs, batch_size=batch_size, seed=seed, run=run_dir, images=images,
                          dataset=target.name)
            if "mode" in options:
                app.transfer(backbone=backbone, **common, **options)
            else:
                app.train(model="lenet5", **common, **options)
            accuracy[method].append(app.score(run_dir, target.test))
            print(f"transfer study: n={n} {method}: test accuracy {accuracy[method][-1]:.4f}")
    return accuracy


def run_transfer(*, out=None, small=False, seed=0, backbone=None):
    """The transfer study: Fashion-MNIST LeNet-5 -> MNIST digits (mnist5k) at several labelled budgets,
    over a few seeds (each its own split and labelled subset). `backbone`, a trained LeNet-5 run
    folder, skips the pretraining."""
    import matplotlib.pyplot as plt

    folder = study_dir(out, "transfer")
    budgets, steps, seeds = ((30, 100), 60, [seed]) if small else ((30, 100, 300), 100, [seed, seed + 1, seed + 2])
    runs = []
    with tempfile.TemporaryDirectory(prefix="transfer-study-") as scratch:
        backbone = backbone or pretrain_backbone(os.path.join(scratch, "backbone"), small=small, seed=seed)
        source_accuracy = app.score(backbone, data.load_dataset("fashion_mnist", seed=seed, limit=2000).test)
        for s in seeds:
            target = data.load_dataset("mnist5k", seed=s)
            runs.append(transfer_curve(backbone, target, budgets, steps=steps, seed=s,
                                       scratch_dir=os.path.join(scratch, f"seed{s}")))
    accuracy = {m: np.array([r[m] for r in runs]) for m in TRANSFER_METHODS}  # (seeds, budgets)
    mean = {m: a.mean(axis=0) for m, a in accuracy.items()}
    std = {m: a.std(axis=0, ddof=1) if len(seeds) > 1 else 0 * a[0] for m, a in accuracy.items()}

    print_table(f"transfer: LeNet-5 on MNIST digits (mnist5k, 1,000 test images), ~{steps} Adam steps per run, "
                f"mean ± std over seeds {seeds}; backbone: Fashion-MNIST (its test accuracy {source_accuracy:.3f})",
                ["labelled examples", *(f"{m} ± std" for m in TRANSFER_METHODS), "fine-tuned - scratch"],
                [[n, *(f"{mean[m][i]:.3f} ± {std[m][i]:.3f}" for m in TRANSFER_METHODS),
                  mean["fine-tuned"][i] - mean["scratch"][i]] for i, n in enumerate(budgets)])
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for method, marker in zip(TRANSFER_METHODS, "os^"):
        ax.errorbar(budgets, mean[method], std[method], fmt=marker + "-", capsize=3, label=method)
    ax.set_xscale("log")
    ax.set_xticks(budgets, [str(n) for n in budgets])
    ax.minorticks_off()
    ax.set_xlabel("labelled MNIST training examples")
    ax.set_ylabel(f"test accuracy (mean ± std, {len(seeds)} seed(s))")
    ax.set_title("transfer from Fashion-MNIST vs training from scratch (LeNet-5)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    png = plots.save_figure(fig, os.path.join(folder, "transfer_vs_scratch.png"))
    results = dict(budgets=list(budgets), steps=steps, seeds=seeds, source_accuracy=source_accuracy,
                   accuracy={m: a.tolist() for m, a in accuracy.items()})
    print(f"wrote {png}\nwrote {write_json(folder, 'transfer.json', results)}")
    return {**results, "pngs": [png]}


# --------------------------------------------------------------------------
# Class imbalance: what the rare classes lose, and what handling gives back.

IMBALANCE_SETUPS = {"none": {}, "class weights": dict(class_weight="balanced"),
                    "over-sampling": dict(resample="over")}


def rarest_classes(counts, k):
    """The `k` classes with the fewest training examples (ties: the higher class index)."""
    return sorted(np.argsort(-np.asarray(counts), kind="stable")[-k:].tolist())


def imbalance_scores(labels, predicted, num_classes, minority):
    report = classification_report(labels, predicted, num_classes)
    return dict(accuracy=float(report["accuracy"]), macro_recall=float(report["recall"].mean()),
                macro_f1=float(report["f1"].mean()), minority_recall=float(report["recall"][minority].mean()),
                recall=report["recall"].tolist())


def imbalance_results(images, *, ratio, steps, batch_size=32, learning_rate=1e-3, seed=0, model="mlp",
                      setups=IMBALANCE_SETUPS, minority=3, scratch_dir):
    """Train `model` on the training split made imbalanced by `ratio` (recipes.rebalance) once per
    setup, each for about `steps` optimizer steps; score on the (balanced) test split.
    Returns {setup: scores}, the imbalanced class counts and the minority classes."""
    labels = np.concatenate([y for _, y in images.train.batch(4096).as_numpy_iterator()])
    counts = recipes.imbalanced_counts(np.bincount(labels, minlength=images.num_classes), ratio)
    rare = rarest_classes(counts, minority)
    scores = {}
    for name, options in setups.items():
        size = len(recipes.rebalance_indices(labels, images.num_classes, imbalance=ratio,
                                             resample=options.get("resample", "none"), seed=seed))
        run_dir = os.path.join(scratch_dir, name.replace(" ", "_"))
        app.train(model=model, dataset=images.name, images=images, imbalance=ratio, batch_size=batch_size,
                  epochs=epochs_for(size, batch_size, steps), learning_rate=learning_rate, seed=seed,
                  run=run_dir, **options)
        scores[name] = imbalance_scores(*predictions(run_dir, images.test), images.num_classes, rare)
        print(f"imbalance study: {name}: minority recall {scores[name]['minority_recall']:.3f}")
    return scores, counts.tolist(), rare


def run_imbalance(*, out=None, small=False, seed=0):
    """The imbalance study on Fashion-MNIST: the last class keeps 1 % of its examples (--small: 2 %)."""
    import matplotlib.pyplot as plt

    folder = study_dir(out, "imbalance")
    limit, steps, ratio = (1000, 100, 0.02) if small else (3000, 300, 0.01)
    images = data.load_dataset("fashion_mnist", seed=seed, limit=limit)
    images = dataclasses.replace(images, val=images.val.take(limit // 4))  # only picks the checkpoint
    with tempfile.TemporaryDirectory(prefix="imbalance-study-") as scratch:
        scores, counts, rare = imbalance_results(images, ratio=ratio, steps=steps, seed=seed, scratch_dir=scratch)

    names = [images.class_names[c] for c in rare]
    print_table(f"imbalance: MLP on Fashion-MNIST, training counts per class {counts} (ratio {ratio}), "
                f"~{steps} Adam steps per setup; balanced test split; minority = {', '.join(names)}",
                ["setup", "accuracy", "macro recall", "macro F1", "minority recall", "rarest-class recall"],
                [[name, s["accuracy"], s["macro_recall"], s["macro_f1"], s["minority_recall"], s["recall"][rare[-1]]]
                 for name, s in scores.items()])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw=dict(width_ratios=(1, 1.6)))
    metrics = ("macro_recall", "macro_f1", "minority_recall")
    width = 0.8 / len(scores)
    for i, (name, s) in enumerate(scores.items()):
        left.bar(np.arange(len(metrics)) + i * width, [s[m] for m in metrics], width, label=name)
        right.plot(range(images.num_classes), s["recall"], "o-", label=name)
    left.set_xticks(np.arange(len(metrics)) + width * (len(scores) - 1) / 2,
                    ["macro recall", "macro F1", "minority recall"])
    left.set_ylim(0, 1)
    left.legend(fontsize=8)
    left.set_title("test scores by setup", fontsize=10)
    right.set_xticks(range(images.num_classes), [f"{n}\n({c})" for n, c in zip(images.class_names, counts)],
                     fontsize=7)
    right.set_ylabel("test recall")
    right.set_ylim(0, 1.02)
    right.set_title("recall per class (training examples in brackets)", fontsize=10)
    right.grid(alpha=0.3)
    png = plots.save_figure(fig, os.path.join(folder, "imbalance_handling.png"))
    results = dict(ratio=ratio, steps=steps, counts=counts, minority=rare, scores=scores)
    print(f"wrote {png}\nwrote {write_json(folder, 'imbalance.json', results)}")
    return {**results, "pngs": [png]}
