"""Adversarial examples and adversarial training.

  FGSM  x' = clip(x + eps * sign(grad_x L(x, y)))          (Goodfellow et al. 2015)
        targeted: x' = clip(x - eps * sign(grad_x L(x, t))) (move towards class t)
  PGD   random start in the L-inf eps-ball, then `steps` signed-gradient steps
        of size alpha, each projected back into the ball and the pixel range
        (Madry et al. 2018); targeted likewise with the target's loss.

eps is a fraction of the pixel range: the models read raw pixels in [0, 255],
so eps = 0.1 moves each pixel by at most 25.5. L is the cross-entropy of the
class scores (logits; a SavedModel gives log-probabilities, the same up to a
constant per example).

Adversarial training (Goodfellow et al. 2015; Madry et al. 2018) trains the
same architecture as a classify run on batches whose examples are replaced
(all, or a share) by attacks on the current model, and writes a new run
folder that `apps.classify evaluate/export` and every visualize method read.
"""

import json
import os

import numpy as np
import tensorflow as tf

from apps.visualize import common
from core import plots
from core.errors import UserError

PIXEL_RANGE = 255.0
DEFAULT_EPSILONS = (0.0, 0.02, 0.05, 0.1, 0.2)


def _check_eps(eps):
    if not 0.0 <= eps <= 1.0:
        raise UserError(f"epsilon is a fraction of the pixel range and must be in [0, 1], got {eps}")


def _scores_fn(clf):
    if clf.model is not None:
        scores = common.logits_model(clf.model)
        return lambda x: scores(x, training=False)
    return clf.logits


def loss_gradient(scores, x, classes):
    """grad_x of the cross-entropy of `scores(x)` against `classes`."""
    x = tf.convert_to_tensor(x, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(classes, tf.int32), scores(x))
    return tape.gradient(loss, x)


def _fgsm(scores, x, labels, eps_px, target=None):
    if target is None:
        step = eps_px * tf.sign(loss_gradient(scores, x, labels))
    else:
        step = -eps_px * tf.sign(loss_gradient(scores, x, target))
    return tf.clip_by_value(x + step, 0.0, PIXEL_RANGE)


def _pgd(scores, x, labels, eps_px, steps, alpha_px, target=None, random_start=True, seed=0):
    x = tf.convert_to_tensor(x, tf.float32)
    if random_start:
        noise = tf.random.stateless_uniform(tf.shape(x), (seed, 1), -eps_px, eps_px)
        adv = tf.clip_by_value(x + noise, 0.0, PIXEL_RANGE)
    else:
        adv = x
    for _ in range(steps):
        if target is None:
            adv = adv + alpha_px * tf.sign(loss_gradient(scores, adv, labels))
        else:
            adv = adv - alpha_px * tf.sign(loss_gradient(scores, adv, target))
        adv = tf.clip_by_value(tf.clip_by_value(adv, x - eps_px, x + eps_px), 0.0, PIXEL_RANGE)
    return adv


def fgsm(clf, x, labels, eps, target=None, batch_size=256):
    """FGSM adversarial images (raw pixels); untargeted unless `target` (class per image) is given."""
    _check_eps(eps)
    scores = _scores_fn(clf)
    out = []
    for i in range(0, len(x), batch_size):
        t = None if target is None else target[i:i + batch_size]
        out.append(_fgsm(scores, tf.constant(x[i:i + batch_size], tf.float32), labels[i:i + batch_size],
                         eps * PIXEL_RANGE, t).numpy())
    return np.concatenate(out)


def pgd(clf, x, labels, eps, *, steps=10, alpha=None, target=None, random_start=True, seed=0, batch_size=256):
    """PGD (L-inf) adversarial images; alpha (step size, fraction of the range) defaults to 2.5 eps / steps."""
    _check_eps(eps)
    if steps < 1:
        raise UserError(f"--steps must be at least 1, got {steps}")
    alpha = 2.5 * eps / steps if alpha is None else alpha
    scores = _scores_fn(clf)
    out = []
    for i in range(0, len(x), batch_size):
        t = None if target is None else target[i:i + batch_size]
        out.append(_pgd(scores, x[i:i + batch_size], labels[i:i + batch_size], eps * PIXEL_RANGE, steps,
                        alpha * PIXEL_RANGE, t, random_start, seed + i).numpy())
    return np.concatenate(out)


def attack(clf, x, labels, eps, method="fgsm", target=None, steps=10, seed=0):
    if method == "fgsm":
        return fgsm(clf, x, labels, eps, target)
    if method == "pgd":
        return pgd(clf, x, labels, eps, steps=steps, target=target, seed=seed)
    raise UserError(f"unknown attack '{method}'; choose fgsm or pgd")


def robust_accuracy(clf, x, labels, epsilons=DEFAULT_EPSILONS, methods=("fgsm", "pgd"), steps=10, target=None):
    """{method: [accuracy at each eps]} (and targeted success rates when `target` is given)."""
    result = {"epsilons": list(map(float, epsilons))}
    for method in methods:
        accuracies, successes = [], []
        for eps in epsilons:
            adv = x if eps == 0 else attack(clf, x, labels, eps, method, target, steps)
            predicted = clf.predict(adv).argmax(axis=1)
            accuracies.append(float(np.mean(predicted == labels)))
            if target is not None:
                successes.append(float(np.mean(predicted == target)))
        result[method] = accuracies
        if target is not None:
            result[f"{method}_target_success"] = successes
    return result


def _targets(clf, labels, target):
    if target is None:
        return None
    index = common.target_classes(clf, labels[:1], target)[0]
    return np.full(len(labels), index)


def run_attacks(clf, *, count=500, epsilons=DEFAULT_EPSILONS, show_eps=0.1, method="both", steps=10,
                target=None, figures=None, examples=6):
    """Accuracy under FGSM and PGD at several eps on `count` test images
    (PNG + JSON), and original / perturbation / adversarial triplets at `show_eps`."""
    for eps in list(epsilons) + [show_eps]:
        _check_eps(eps)
    x, y = common.test_examples(clf, count)
    methods = ("fgsm", "pgd") if method == "both" else (method,)
    target_classes = _targets(clf, y, target)
    keep = None if target_classes is None else y != target_classes  # a targeted attack needs another class
    if keep is not None:
        x, y, target_classes = x[keep], y[keep], target_classes[keep]
    table = robust_accuracy(clf, x, y, epsilons, methods, steps, target_classes)
    folder = common.figures_dir(figures, clf)
    suffix = "" if target is None else f"_target_{target_classes[0]}"
    kind = "untargeted" if target is None else f"targeted at '{clf.class_names[target_classes[0]]}'"
    print(f"accuracy under attack ({kind}) on {len(x)} test images of {clf.dataset}:")
    print(f"{'eps':>6} " + " ".join(f"{m:>8}" for m in methods)
          + ("" if target is None else " " + " ".join(f"{m + ' hit':>9}" for m in methods)))
    for i, eps in enumerate(table["epsilons"]):
        line = f"{eps:6.3f} " + " ".join(f"{table[m][i]:8.3f}" for m in methods)
        if target is not None:
            line += " " + " ".join(f"{table[m + '_target_success'][i]:9.3f}" for m in methods)
        print(line)
    curve_png = os.path.join(folder, f"robust_accuracy{suffix}.png")
    robustness_plot({clf.name: table}, curve_png, f"{clf.name}: accuracy under {kind} attack ({len(x)} images)")
    with open(os.path.join(folder, f"robust_accuracy{suffix}.json"), "w") as f:
        json.dump(table, f, indent=2)

    # Triplets: original, perturbation (amplified), adversarial.
    shown = slice(0, examples)
    pngs = {"curve": curve_png}
    for m in methods:
        adv = attack(clf, x[shown], y[shown], show_eps, m,
                     None if target_classes is None else target_classes[shown], steps)
        pngs[m] = triplets(clf, x[shown], y[shown], adv,
                           os.path.join(folder, f"{m}_examples{suffix}.png"),
                           f"{clf.name}: {m.upper()} {kind}, eps={show_eps} ({show_eps * 255:.0f}/255)")
    return {"table": table, "pngs": pngs}


def triplets(clf, x, labels, adv, png, title):
    p_clean, p_adv = clf.predict(x), clf.predict(adv)
    names = clf.class_names
    images, titles = [], []
    delta = adv - x
    scale = max(float(np.abs(delta).max()), 1e-6)
    for i in range(len(x)):
        c, a = p_clean[i].argmax(), p_adv[i].argmax()
        images += [common.as_rgb(common.to_display(x[i:i + 1]))[0],
                   common.as_rgb(0.5 + 0.5 * delta[i:i + 1] / scale)[0],
                   common.as_rgb(common.to_display(adv[i:i + 1]))[0]]
        titles += [f"{names[c]} {p_clean[i, c]:.2f}\n(true {names[labels[i]]})",
                   f"perturbation\nmax |d|={np.abs(delta[i]).max():.1f}",
                   f"{names[a]} {p_adv[i, a]:.2f}" + ("" if a == c else " (changed)")]
    return plots.image_grid(np.stack(images), titles, png, columns=6 if len(x) > 1 else 3, title=title)


def robustness_plot(tables, png, title):
    """Accuracy against eps, one line per (model, attack)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, table in tables.items():
        for method, style in (("fgsm", "o-"), ("pgd", "s--")):
            if method in table:
                ax.plot(table["epsilons"], table[method], style, label=f"{name} {method.upper()}")
    ax.set_xlabel("eps (fraction of the pixel range)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    return plots.save_figure(fig, png)


# --------------------------------------------------------------------------
# Adversarial training.


def adversarial_train_step(net, *, eps, method="fgsm", steps=3, share=0.5):
    """A train_step for `net` that attacks each batch with the current weights
    first: a share `share` of the batch is replaced by its adversarial version
    (share=1: Madry's min-max training on PGD examples only)."""
    scores = common.logits_model(net)
    score_fn = lambda x: scores(x, training=False)
    base_step = type(net).train_step
    eps_px = eps * PIXEL_RANGE

    def train_step(data):
        x, y = data[0], data[1]
        x = tf.cast(x, tf.float32)
        n_adv = tf.cast(tf.math.ceil(share * tf.cast(tf.shape(x)[0], tf.float32)), tf.int32)
        if method == "fgsm":  # FGSM from a random start (Wong et al. 2020), step 1.25 eps
            start = tf.clip_by_value(x + tf.random.uniform(tf.shape(x), -eps_px, eps_px), 0.0, PIXEL_RANGE)
            adv = start + 1.25 * eps_px * tf.sign(loss_gradient(score_fn, start, y))
            adv = tf.clip_by_value(tf.clip_by_value(adv, x - eps_px, x + eps_px), 0.0, PIXEL_RANGE)
        else:
            adv = _pgd(score_fn, x, y, eps_px, steps, 2.5 * eps_px / steps, random_start=True,
                       seed=tf.random.uniform((), 0, 2 ** 30, tf.int32))
        adv = tf.stop_gradient(adv)
        mixed = tf.concat([adv[:n_adv], x[n_adv:]], axis=0)
        return base_step(net, (mixed, y))

    return train_step


def adversarial_train(*, run, out, eps=0.1, method="fgsm", steps=3, share=0.5, epochs=None, limit=None,
                      batch_size=None, learning_rate=None, seed=None, eval_count=500,
                      epsilons=DEFAULT_EPSILONS, finetune=False, eval_steps=10):
    """Train the architecture of the classify run `run` adversarially into the
    run folder `out`; then compare both models' accuracy under FGSM and PGD."""
    import keras

    from core import data, training

    _check_eps(eps)
    if method not in ("fgsm", "pgd"):
        raise UserError(f"unknown attack '{method}'; choose fgsm or pgd")
    if not 0.0 < share <= 1.0:
        raise UserError(f"--share must be in (0, 1], got {share}")
    if os.path.abspath(run) == os.path.abspath(out):
        raise UserError("--to must be a new run folder, not the standard run itself")
    base = training.load_config(run)
    standard = common.load_keras_model(run, input_shape=base.get("image_shape"))
    if len(standard.outputs) != 1:
        raise UserError(f"adversarial training supports single-output classifiers; {standard.name} has "
                        f"{len(standard.outputs)} outputs")
    seed = base.get("seed", 0) if seed is None else seed
    training.set_seed(seed)
    epochs = epochs or base.get("epochs", 5)
    batch_size = batch_size or base.get("batch_size", 128)
    learning_rate = learning_rate or base.get("learning_rate", 1e-3)
    limit = limit if limit is not None else base.get("limit")
    images = data.load_dataset(base["dataset"], val_fraction=base.get("val_fraction", 0.1), seed=seed, limit=limit)
    # The same architecture with fresh weights (clone_model re-initializes),
    # or the standard run's weights as the start when fine-tuning.
    net = keras.models.clone_model(standard)
    if finetune:
        net.set_weights(standard.get_weights())
    net.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                metrics=["accuracy"])
    # Keras calls `self.train_step`; an instance attribute replaces it for this
    # fit only, and the saved model.keras stays a plain functional model.
    net.train_step = adversarial_train_step(net, eps=eps, method=method, steps=steps, share=share)
    config = dict(base, epochs=epochs, batch_size=batch_size, seed=seed, limit=limit, learning_rate=learning_rate,
                  adversarial=dict(method=method, eps=eps, steps=steps, share=share, base_run=run,
                                   finetune=bool(finetune)))
    training.save_config(out, config, identity_keys=("model", "dataset"))
    print(f"adversarial training of {base.get('model', standard.name)} on {images.name}: {method.upper()} eps={eps} "
          f"({share:.0%} of each batch adversarial), {epochs} epoch(s)")
    training.fit(net, data.batched(images.train, batch_size, shuffle=True, seed=seed),
                 data.batched(images.val, batch_size), epochs=epochs, run_dir=out)
    return compare_robustness([run, out], count=eval_count, epsilons=epsilons, steps=eval_steps,
                              figures=os.path.join(out, common.FIGURES))


def compare_robustness(runs, *, count=500, epsilons=DEFAULT_EPSILONS, steps=10, figures=None):
    """Accuracy under FGSM and PGD for several classifiers on the same test images."""
    tables = {}
    clfs = [common.load_classifier(r) for r in runs]
    x, y = common.test_examples(clfs[0], count)
    for r, clf in zip(runs, clfs):
        label = clf.name + (" (adversarial)" if (clf.config or {}).get("adversarial") else "")
        tables[label] = robust_accuracy(clf, x, y, epsilons, ("fgsm", "pgd"), steps)
    print(f"accuracy under attack on {len(x)} test images (PGD: {steps} steps, random start):")
    print(f"{'model':>32} {'attack':>6} " + " ".join(f"{e:>6.3f}" for e in epsilons))
    for name, table in tables.items():
        for m in ("fgsm", "pgd"):
            print(f"{name[-32:]:>32} {m:>6} " + " ".join(f"{a:6.3f}" for a in table[m]))
    folder = common.figures_dir(figures, clfs[0])
    png = robustness_plot(tables, os.path.join(folder, "robustness_comparison.png"),
                          f"accuracy under attack, {len(x)} test images")
    with open(os.path.join(folder, "robustness_comparison.json"), "w") as f:
        json.dump(tables, f, indent=2)
    return {"tables": tables, "png": png}
