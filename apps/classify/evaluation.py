"""Honest evaluation: ROC curves and AUC, stratified k-fold cross-validation,
and paired comparisons of two training setups over seeds.

  ROC / AUC   one-vs-rest: class c against the rest, scored by p(c | x); the
              micro average pools every (example, class) pair, the macro
              average is the mean of the per-class AUCs.
  cv          K models on K stratified folds of the training data; each fold is
              scored by the model that never saw it. The test split is never read.
  compare     two setups (A, B) trained with the same N seeds on the same
              splits; the paired differences of their test accuracies go
              through a paired t-test (and a Wilcoxon signed-rank test from 6
              seeds on), so a claim "B beats A" comes with a p-value.
"""

import csv
import json
import os

import numpy as np
import tensorflow as tf
from scipy import stats

from core import data, plots
from core.errors import UserError

# --------------------------------------------------------------------------
# ROC curves and the area under them.


def roc_curve(is_positive, scores):
    """False- and true-positive rates at every distinct score threshold, from
    (0, 0) (threshold above the top score) to (1, 1). Tied scores enter
    together, as one diagonal step."""
    is_positive = np.asarray(is_positive, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    positives, negatives = is_positive.sum(), (~is_positive).sum()
    if positives == 0 or negatives == 0:
        return None  # undefined: one of the rates would divide by zero
    order = np.argsort(-scores, kind="stable")
    scores, is_positive = scores[order], is_positive[order]
    # The last index of each run of equal scores: the points of the curve.
    last_of_run = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    true_positives = np.cumsum(is_positive)[last_of_run]
    false_positives = (last_of_run + 1) - true_positives
    return (np.r_[0.0, false_positives / negatives], np.r_[0.0, true_positives / positives])


def area_under(fpr, tpr):
    """Trapezoidal area under a ROC curve."""
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def roc_report(labels, probabilities):
    """One-vs-rest ROC curves of every class plus the micro and macro averages.

    Returns {"auc": {class index: AUC or None}, "micro_auc", "macro_auc",
    "curves": {class index | "micro" | "macro": (fpr, tpr)}}. A class absent
    from `labels` has no ROC curve (no positives) and is left out of the macro
    average. The macro curve is the per-class TPRs averaged on the union of
    their FPR grids; `macro_auc` is the mean of the per-class AUCs (sklearn's
    `roc_auc_score(..., multi_class="ovr", average="macro")`), which the area
    under that averaged curve approximates.
    """
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    num_classes = probabilities.shape[1]
    one_hot = labels[:, None] == np.arange(num_classes)[None, :]
    curves, auc = {}, {}
    for c in range(num_classes):
        curve = roc_curve(one_hot[:, c], probabilities[:, c])
        auc[c] = None if curve is None else area_under(*curve)
        if curve is not None:
            curves[c] = curve
    if not curves:
        raise UserError("ROC needs examples of at least two classes")
    curves["micro"] = roc_curve(one_hot.ravel(), probabilities.ravel())
    grid = np.unique(np.concatenate([curves[c][0] for c in range(num_classes) if c in curves]))
    mean_tpr = np.mean([np.interp(grid, *curves[c]) for c in range(num_classes) if c in curves], axis=0)
    curves["macro"] = (grid, mean_tpr)
    present = [a for a in auc.values() if a is not None]
    return {"auc": auc, "micro_auc": area_under(*curves["micro"]), "macro_auc": float(np.mean(present)),
            "curves": curves}


def roc_png(report, class_names, png_path, title="ROC, one class vs the rest"):
    """Every class's ROC curve (thin) and the micro/macro averages (thick)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    colours = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for c, name in enumerate(class_names):
        if c in report["curves"]:
            ax.plot(*report["curves"][c], lw=1, color=colours(c % colours.N),
                    label=f"{name} ({report['auc'][c]:.3f})")
    ax.plot(*report["curves"]["micro"], lw=2.5, ls="--", color="black", label=f"micro ({report['micro_auc']:.3f})")
    ax.plot(*report["curves"]["macro"], lw=2.5, ls=":", color="crimson", label=f"macro ({report['macro_auc']:.3f})")
    ax.plot([0, 1], [0, 1], lw=0.8, color="gray", alpha=0.6)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_xlim(-0.01, 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(title="AUC", fontsize=7, loc="lower right")
    ax.set_title(title)
    return plots.save_figure(fig, png_path)


# --------------------------------------------------------------------------
# Stratified k-fold cross-validation.


def stratified_folds(labels, folds, seed=0):
    """Split indices 0..N-1 into `folds` disjoint folds that keep every class's
    share: each class's examples, shuffled, are dealt round-robin, the deal
    of each class starting where the previous class's stopped, so the fold
    sizes differ by at most one. Returns a list of sorted index arrays."""
    labels = np.asarray(labels)
    if folds < 2:
        raise UserError(f"--folds must be at least 2, got {folds}")
    counts = np.bincount(labels)
    if counts[counts > 0].min() < folds:
        raise UserError(f"--folds {folds} is more than the {counts[counts > 0].min()} examples of the smallest "
                        "class; use fewer folds or more data (--limit)")
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(labels), dtype=np.int64)
    start = 0
    for c in np.flatnonzero(counts):
        members = rng.permutation(np.flatnonzero(labels == c))
        fold_of[members] = (start + np.arange(len(members))) % folds
        start = (start + len(members)) % folds
    return [np.flatnonzero(fold_of == k) for k in range(folds)]


def _arrays(dataset):
    x, y = [], []
    for images, labels in dataset.batch(4096).as_numpy_iterator():
        x.append(images)
        y.append(labels)
    return np.concatenate(x), np.concatenate(y)


def _image_dataset(name, like, train, val, test):
    def pipeline(xy):
        return tf.data.Dataset.from_tensor_slices((xy[0].astype(np.float32), xy[1].astype(np.int32)))

    return data.ImageDataset(name=name, class_names=like.class_names, image_shape=like.image_shape,
                             train=pipeline(train), val=pipeline(val), test=pipeline(test), num_train=len(train[0]))


def cross_validate(config, *, folds=5, run="runs/classify/cv"):
    """Stratified k-fold cross-validation of `config` (a TrainConfig) on the training data (training +
    validation splits pooled; `config.limit` caps the pool). Fold k's model trains on
    the other folds, minus a `val_fraction` carved from them for its
    checkpoint choice, and is scored on fold k, which it never saw. Writes
    cv.json and cv.csv to `run`; returns the report."""
    from apps.classify import app
    from core.cli import config_dict

    dataset, limit, seed, val_fraction, out = config.dataset, config.limit, config.seed, config.val_fraction, run
    images = data.load_dataset(dataset, val_fraction=0.5, seed=seed)
    x, y = (np.concatenate(parts) for parts in zip(_arrays(images.train), _arrays(images.val)))
    if limit:
        x, y = x[:limit], y[:limit]
    fold_indices = stratified_folds(y, folds, seed=seed)
    rng = np.random.default_rng(seed)
    results = []
    for k, held_out in enumerate(fold_indices):
        rest = rng.permutation(np.setdiff1d(np.arange(len(y)), held_out))
        n_val = max(1, int(round(len(rest) * val_fraction)))
        split = _image_dataset(f"{images.name} (fold {k + 1} of {folds})", images,
                               (x[rest[n_val:]], y[rest[n_val:]]), (x[rest[:n_val]], y[rest[:n_val]]),
                               (x[held_out], y[held_out]))
        run_dir = os.path.join(out, f"fold{k + 1}")
        print(f"cv: fold {k + 1}/{folds}: train on {split.num_train}, checkpoint on {n_val}, score on {len(held_out)}")
        app.train(config, run=run_dir, images=split)
        accuracy = app.score(run_dir, split.test)
        counts = np.bincount(y[held_out], minlength=images.num_classes)
        results.append(dict(fold=k + 1, accuracy=accuracy, num_train=split.num_train, num_val=n_val,
                            num_scored=int(len(held_out)), class_counts=counts.tolist()))
        print(f"cv: fold {k + 1}/{folds}: accuracy {accuracy:.4f}")
    accuracies = np.array([r["accuracy"] for r in results])
    options = {k: v for k, v in config_dict(config).items() if k not in ("model", "dataset", "seed", "limit")}
    report = dict(model=config.model, dataset=dataset, folds=folds, seed=seed, limit=limit, options=options,
                  per_fold=results, mean_accuracy=float(accuracies.mean()),
                  std_accuracy=float(accuracies.std(ddof=1)))
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "cv.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(out, "cv.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["fold", "accuracy", "num_train", "num_val", "num_scored"])
        for r in results:
            writer.writerow([r["fold"], f"{r['accuracy']:.6f}", r["num_train"], r["num_val"], r["num_scored"]])
    print(f"cv: {config.model}, {folds} folds: accuracy {report['mean_accuracy']:.4f} ± {report['std_accuracy']:.4f} "
          f"(mean ± sample std) -> {os.path.join(out, 'cv.json')}, {os.path.join(out, 'cv.csv')}")
    return report


# --------------------------------------------------------------------------
# Paired comparisons over seeds.

WILCOXON_MIN_SEEDS = 6  # below 6 pairs the exact two-sided p-value cannot go under 0.05


def paired_t_test(a, b):
    """Two-sided paired t-test of mean(a - b) = 0: t = mean(d) / (s_d / sqrt(n)),
    n - 1 degrees of freedom (scipy.stats.ttest_rel). Returns (t, p); when
    every difference is equal the t statistic is infinite (p = 0), or
    undefined when they are all 0 (p = 1: no evidence of any difference)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    n = len(d)
    if n < 2:
        raise UserError("a paired t-test needs at least 2 seeds")
    spread = d.std(ddof=1)
    if spread == 0:
        return (0.0, 1.0) if d.mean() == 0 else (float(np.sign(d.mean()) * np.inf), 0.0)
    t = d.mean() / (spread / np.sqrt(n))
    return float(t), float(2.0 * stats.t.sf(abs(t), df=n - 1))


def wilcoxon_p(a, b):
    """Two-sided Wilcoxon signed-rank p-value of the paired differences, or
    None under WILCOXON_MIN_SEEDS pairs or when every difference is 0."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if len(d) < WILCOXON_MIN_SEEDS or not np.any(d):
        return None
    return float(stats.wilcoxon(d).pvalue)


def compare_verdict(name_a, a, name_b, b, alpha=0.05):
    """The statistics of a paired comparison and one plain sentence about it."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    t, p = paired_t_test(a, b)
    p_wilcoxon = wilcoxon_p(a, b)
    better, worse = (name_a, name_b) if a.mean() >= b.mean() else (name_b, name_a)
    if p < alpha:
        sentence = (f"{better} is better than {worse}: the difference of the means, {abs(a.mean() - b.mean()):.4f}, "
                    f"is significant at alpha = {alpha} (paired t-test p = {p:.3g}, {len(a)} seeds)")
    else:
        sentence = (f"no significant difference at alpha = {alpha}: {better} is ahead by "
                    f"{abs(a.mean() - b.mean()):.4f} but p = {p:.3g} over {len(a)} seeds (paired t-test)")
    return dict(mean_a=float(a.mean()), std_a=float(a.std(ddof=1)), mean_b=float(b.mean()),
                std_b=float(b.std(ddof=1)), mean_difference=float((a - b).mean()), t=t, p_t_test=p,
                p_wilcoxon=p_wilcoxon, alpha=alpha, significant=bool(p < alpha), verdict=sentence)


def compare_png(name_a, a, name_b, b, png_path, title):
    """Per-seed paired dots joined by lines, with each setup's mean ± std."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    for i, (va, vb) in enumerate(zip(a, b)):
        ax.plot([0, 1], [va, vb], "-o", color="gray", alpha=0.6, ms=4, label="one seed" if i == 0 else None)
    for x, values in ((0, np.asarray(a)), (1, np.asarray(b))):
        ax.errorbar(x + 0.12, values.mean(), yerr=values.std(ddof=1) if len(values) > 1 else 0, fmt="s",
                    color="crimson", capsize=6, label="mean ± std" if x == 0 else None)
    ax.set_xticks([0, 1], [name_a, name_b])
    ax.set_xlim(-0.4, 1.5)
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    return plots.save_figure(fig, png_path)


def compare(setup_a, setup_b, *, seeds=3, alpha=0.05, run="runs/classify/compare", name_a="A", name_b="B"):
    """Train setups A and B (TrainConfigs that differ in their recipe, not in their data: `DATA_KEYS`)
    once per seed 0..seeds-1 on the same data split (carved with setup A's seed), score each on the test
    split, and compare the paired accuracies. Writes compare.json and compare.png to `run` (the runs in
    a_seed<i>/, b_seed<i>/); returns the report."""
    import dataclasses

    from apps.classify import app
    from apps.classify.config import DATA_KEYS
    from core.cli import config_dict

    if seeds < 2:
        raise UserError(f"--seeds must be at least 2 for a paired test, got {seeds}")
    if not 0.0 < alpha < 1.0:
        raise UserError(f"--alpha must be in (0, 1), got {alpha}")
    if any(getattr(setup_a, k) != getattr(setup_b, k) for k in DATA_KEYS):
        raise UserError(f"compare's setups must share their data ({', '.join(DATA_KEYS)})")
    dataset, limit, split_seed, out = setup_a.dataset, setup_a.limit, setup_a.seed, run
    images = data.load_dataset(dataset, val_fraction=setup_a.val_fraction, seed=split_seed, limit=limit)
    a, b = [], []
    for seed in range(seeds):
        for key, name, setup, accuracies in (("a", name_a, setup_a, a), ("b", name_b, setup_b, b)):
            run_dir = os.path.join(out, f"{key}_seed{seed}")
            app.train(dataclasses.replace(setup, seed=seed), run=run_dir, images=images)
            accuracies.append(app.score(run_dir, images.test))
            print(f"compare: {name}, seed {seed}: test accuracy {accuracies[-1]:.4f}")
    setup_a, setup_b = ({k: v for k, v in config_dict(s).items() if k not in DATA_KEYS} for s in (setup_a, setup_b))
    report = dict(name_a=name_a, name_b=name_b, setup_a=setup_a, setup_b=setup_b, dataset=dataset, limit=limit,
                  split_seed=split_seed, seeds=list(range(seeds)), accuracy_a=a, accuracy_b=b,
                  **compare_verdict(name_a, a, name_b, b, alpha))
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "compare.json"), "w") as f:
        json.dump(report, f, indent=2)
    png = compare_png(name_a, a, name_b, b, os.path.join(out, "compare.png"),
                      f"{name_a} vs {name_b} on {images.name}, {seeds} seeds: p = {report['p_t_test']:.3g}")
    print(f"{name_a}: {report['mean_a']:.4f} ± {report['std_a']:.4f}   {name_b}: {report['mean_b']:.4f} ± "
          f"{report['std_b']:.4f}   (mean ± std over {seeds} seeds)")
    wilcoxon = ("n/a (needs at least 6 seeds)" if report["p_wilcoxon"] is None
                else f"{report['p_wilcoxon']:.3g}")
    print(f"paired t-test: t = {report['t']:.3f}, p = {report['p_t_test']:.3g}; Wilcoxon signed-rank p = {wilcoxon}")
    print(report["verdict"])
    print(f"wrote {os.path.join(out, 'compare.json')}\nwrote {png}")
    return report
