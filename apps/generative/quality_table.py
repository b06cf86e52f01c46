"""The sample-quality table: train every generative model at a stated budget,
score it with the judge classifier, write a Markdown table and PNG grids.

  python -m apps.generative quality --models all          # runs/generative/quality/quality.md

Each entry of `BUDGETS` is one row: a model with its options and its budget
(training images, epochs, batch size). Every run goes to its own folder
under the output folder, through `app.train` like any other run, so a
killed table resumes: a finished row is read back from its `quality.json`,
an unfinished run resumes at its last epoch.

Scores (see `quality.py`; a LeNet-5 judge of this suite, not ImageNet FID):
samples from z ~ N(0, I) (labels cycling through the classes for the
conditional models) against the same number of real test images. CycleGAN
has no latent space: its row scores the test images of domain A translated
to B against the real test images of B, with the untranslated A images as
the baseline, and "classes covered" becomes the share of translated images
the judge calls B. The autoencoders are left out: their decoders were never
asked to map N(0, I) to images, so scoring them would measure nothing.
"""

import json
import os
import time

import keras
import numpy as np

from apps.generative import app, quality
from apps.generative.common import arrays
from apps.generative.config import TrainConfig
from core import data, plots
from core.errors import UserError, first_line

# name: (model, options, budget). Budgets are sized for a heavily loaded 2-core CPU (about 45 minutes in
# all at a load average near 18): the MLP GANs get ~630 generator steps, the convolutional ones 100-300,
# as each of their steps costs 5-30 times more. `limit` is the number of training images.
_MLP_GAN = dict(limit=5000, epochs=8, batch_size=64)
BUDGETS = {
    "vae": ("vae", {}, dict(limit=5000, epochs=10, batch_size=64)),
    "cvae": ("cvae", {}, dict(limit=5000, epochs=10, batch_size=64)),
    "gan": ("gan", {}, _MLP_GAN),
    "gan_minimax": ("gan", {"gan_loss": "minimax"}, _MLP_GAN),
    "gan_least_squares": ("gan", {"gan_loss": "least_squares"}, _MLP_GAN),
    "gan_feature_matching": ("gan", {"feature_matching": True}, _MLP_GAN),
    "gan_minibatch_discrimination": ("gan", {"minibatch_discrimination": True},
                                     dict(limit=5000, epochs=5, batch_size=64)),
    "dcgan": ("dcgan", {}, dict(limit=3000, epochs=3, batch_size=32)),
    "cgan": ("cgan", {}, dict(limit=3000, epochs=2, batch_size=32)),
    "wgan_gp": ("wgan_gp", {"critic_steps": 2}, dict(limit=1500, epochs=2, batch_size=32)),
    "cyclegan": ("cyclegan", {"domains": (7, 9)}, dict(limit=3000, epochs=1, batch_size=8)),
}
RESULT_FILE = "quality.json"


def parse_models(text):
    """'all' or a comma-separated list of `BUDGETS` names -> the names, in the table's order."""
    if text == "all":
        return list(BUDGETS)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in BUDGETS]
    if unknown or not names:
        raise UserError(f"unknown quality row '{','.join(unknown) or text}'; choose 'all' or some of: "
                        f"{', '.join(BUDGETS)}")
    return names


class CountSteps(keras.callbacks.Callback):
    """Counts the training steps `fit` runs (the generator steps of a GAN)."""

    def __init__(self):
        super().__init__()
        self.steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1


def describe(model, options):
    extras = [f"{key.replace('_', '-')} {value}" if value is not True else key.replace("_", " ")
              for key, value in options.items() if key != "domains"]
    return f"`{model}`" + (f" ({', '.join(extras)})" if extras else "")


def run_quality_table(*, names, dataset="fashion_mnist", out=os.path.join("runs", "generative", "quality"),
                      judge=None, num_samples=1000, seed=0, budgets=BUDGETS, limit=None, epochs=None):
    """Train and score each named row; writes `quality.md`, `quality.json`, PNGs; returns the rows.
    `limit` / `epochs` override every row's budget (quick smoke runs)."""
    judge = judge or quality.judge_dir(dataset)
    if not os.path.exists(os.path.join(judge, "model.keras")):
        print(f"no judge classifier in {judge}: training it first")
        app.judge(dataset=dataset, run=judge)
    scorer = quality.load_judge(judge)
    os.makedirs(out, exist_ok=True)
    rows = []
    for name in names:
        model, options, budget = budgets[name]
        budget = dict(budget, **({"limit": limit} if limit else {}), **({"epochs": epochs} if epochs else {}))
        run_dir = os.path.join(out, name)
        result_path = os.path.join(run_dir, RESULT_FILE)
        if os.path.exists(result_path):
            with open(result_path) as f:
                row = json.load(f)
            if row["budget"] == budget:
                print(f"{name}: reusing {result_path}")
                rows.append(row)
                continue
        print(f"=== {name}: {describe(model, options)}, {budget}")
        steps = CountSteps()
        start = time.time()
        app.train(TrainConfig(model=model, dataset=dataset, seed=seed, **budget, **options), run=run_dir,
                  callbacks=[steps])
        row = dict(name=name, model=model, options=options, budget=budget, steps=steps.steps,
                   wall_s=time.time() - start, load_1min=os.getloadavg()[0])
        row.update(_score(scorer, run_dir, num_samples, seed))
        with open(result_path, "w") as f:
            json.dump(row, f, indent=2)
        rows.append(row)
    real = _real_reference(scorer, dataset, num_samples, seed)
    _write_outputs(rows, real, out, dataset, judge, num_samples)
    return rows


def _test_images(config):
    images = data.load_dataset(config["dataset"], val_fraction=config["val_fraction"], seed=config["seed"])
    return arrays(images.test)


def _score(scorer, run_dir, num_samples, seed):
    """Judge scores of a finished run and its PNG grid of samples (or translations)."""
    config, net = app.load_run(run_dir)
    x_test, y_test = _test_images(config)
    names = config["class_names"]
    if config["family"] == "cyclegan":
        a_id, b_id = config["domains"]
        a, b = x_test[y_test == a_id], x_test[y_test == b_id]
        translated = np.asarray(net.g_ab.predict(a, verbose=0, batch_size=200))
        scores = quality.Judge.scores(scorer, translated, b)
        baseline = quality.Judge.scores(scorer, a, b)
        share = scores["class_counts"][b_id] / scores["num_samples"]  # of the images the scores judged
        grid = np.concatenate([a[:16], translated[:16]])
        titles = [names[a_id]] * 16 + [f"-> {names[b_id]}"] * 16
        png = plots.image_grid(np.clip(grid, 0, 1), titles, os.path.join(run_dir, "samples.png"),
                               title=f"CycleGAN {names[a_id]} -> {names[b_id]} (test images)")
        print(f"wrote {png}")
        return {"scores": scores, "untranslated_frechet_distance": baseline["frechet_distance"],
                "translated_classified_as_target": share, "target": names[b_id], "source": names[a_id],
                "samples_png": png, "overview": _save_overview(run_dir, translated)}
    samples, labels = app.generate(config, net, min(num_samples, len(x_test)), seed=seed + 3)
    scores = quality.Judge.scores(scorer, samples, x_test[:len(samples)])
    titles = [names[i] for i in labels[:64]] if labels is not None else [""] * 64
    png = plots.image_grid(samples[:64], titles, os.path.join(run_dir, "samples.png"),
                           title=f"{os.path.basename(run_dir)}: samples (FD {scores['frechet_distance']:.1f})")
    print(f"wrote {png}")
    print(f"{os.path.basename(run_dir)}: Fréchet distance {scores['frechet_distance']:.2f}, Inception-style score "
          f"{scores['inception_score']:.2f}, classes covered {scores['modes_covered']}/{scores['num_classes']}")
    return {"scores": scores, "samples_png": png, "overview": _save_overview(run_dir, samples)}


def _save_overview(run_dir, images):
    """The first ten images, for the overview PNG (kept so that a reused row still shows its images)."""
    path = os.path.join(run_dir, "overview.npy")
    np.save(path, np.asarray(images[:10], np.float32))
    return path


def _load_overview(path):
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise UserError(f"cannot read {path} ({first_line(error)}); delete the folder {os.path.dirname(path)} "
                        "to rerun that row") from None


def _real_reference(scorer, dataset, num_samples, seed):
    """Validation images against test images: about the Fréchet distance a perfect model would get
    with this many samples (not zero: two finite samples of one distribution)."""
    images = data.load_dataset(dataset, seed=seed)
    real_val, _ = arrays(images.val, num_samples)
    real_test, _ = arrays(images.test, num_samples)
    return quality.Judge.scores(scorer, real_val, real_test[:len(real_val)])


def _share(value):
    return "–" if value is None else f"{value:.2f}"  # rows measured before precision/recall were recorded


def _minutes(seconds):
    return f"{seconds / 60:.1f} min"


def markdown(rows, real, dataset, judge, num_samples):
    lines = [f"Sample quality on `{dataset}` by the judge in `{judge}` ({num_samples} samples vs {num_samples} "
             f"test images; a LeNet-5 of this suite, not the ImageNet FID).", "",
             "| row | model | budget: images × epochs, batch | generator steps | wall time | Fréchet distance ↓ "
             "| precision ↑ | recall ↑ | Inception-style score ↑ | classes covered (of 10) |",
             "|---|---|---|---|---|---|---|---|---|---|",
             f"| real | {real['num_samples']} validation images | | | | {real['frechet_distance']:.1f} | "
             f"{_share(real.get('precision'))} | {_share(real.get('recall'))} | {real['real_inception_score']:.2f} | "
             f"{real['modes_covered']} |"]
    for row in rows:
        b, s = row["budget"], row["scores"]
        covered = (f"{100 * row['translated_classified_as_target']:.0f}% called {row['target']} "
                   f"(untranslated: FD {row['untranslated_frechet_distance']:.1f})"
                   if "target" in row else str(s["modes_covered"]))
        model = describe(row["model"], row["options"])
        if "target" in row:
            model += f": {row['source']} → {row['target']}"
        lines.append(f"| {row['name']} | {model} | {b['limit']:,} × {b['epochs']}, {b['batch_size']} | "
                     f"{row['steps']:,} | {_minutes(row['wall_s'])} | {s['frechet_distance']:.1f} | "
                     f"{_share(s.get('precision'))} | {_share(s.get('recall'))} | {s['inception_score']:.2f} | "
                     f"{covered} |")
    total = sum(row["wall_s"] for row in rows)
    loads = [row["load_1min"] for row in rows]
    lines += ["", f"Training time in all {_minutes(total)}; 1-minute load average after each row "
                  f"{min(loads):.1f}–{max(loads):.1f}." if rows else ""]
    return "\n".join(lines) + "\n"


def _write_outputs(rows, real, out, dataset, judge, num_samples):
    text = markdown(rows, real, dataset, judge, num_samples)
    with open(os.path.join(out, "quality.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out, "quality.json"), "w") as f:
        json.dump({"real": real, "rows": rows}, f, indent=2)
    if rows:  # one row of ten images per model: the table at a glance
        images = [_load_overview(row["overview"]) for row in rows]
        overview = np.concatenate(images)
        titles = [title for row, some in zip(rows, images) for title in [row["name"]] + [""] * (len(some) - 1)]
        png = plots.image_grid(np.clip(overview, 0, 1), titles, os.path.join(out, "quality_samples.png"), columns=10,
                               title="samples per row of the quality table (CycleGAN: translations)")
        print(f"wrote {png}")
    print(text)
    print(f"wrote {os.path.join(out, 'quality.md')}")

