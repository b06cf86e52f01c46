"""Multi-task learning: soft parameter sharing next to hard sharing and independent networks.

Two tasks on Fashion-MNIST images: `fine`, the 10 classes, and `coarse`, the category (top, bottom,
footwear, bag; recipes.FASHION_COARSE). Fine labels are the expensive ones: only `n_fine` images
carry one, while `n_coarse` images carry their category. Each task has a small CNN ("tower") and a
softmax head; three ways to train them, at the same budget (steps, batches, optimizer):

  independent  two towers with their own weights, each trained on its own loss only
  hard         one trunk shared by both tasks, a head per task (Caruana 1997)
  soft         two towers with their own weights, and the loss gains
                   λ · Σ_layers ‖W_fine − W_coarse‖²
               over corresponding layers (every kernel and bias; Duong et al. 2015; Ruder 2017,
               "An overview of multi-task learning in deep neural networks"). λ = 0 is
               `independent`; as λ grows the towers are held together and soft tends to hard.

Each step reads a batch of fine-labelled images and a batch of coarse-labelled ones
(`TaskTowers.train_step`): loss = CE(fine) + CE(coarse) + the penalty. Plain SGD with momentum,
not Adam: Adam divides each weight's step by that weight's own gradient scale, so in two towers
held together by a large λ the small fine-task gradient still gets a full-size step of its own
and soft sharing no longer tends to hard sharing (measured, 2 seeds: with Adam, soft sharing at
λ = 0.1 stayed at the independent towers' accuracy, 0.02 below hard sharing).
"""

import json
import os

import keras
import numpy as np

from apps.basics.common import print_table
from apps.classify import recipes
from core import data, plots, training

SHARING = ("independent", "hard", "soft")


@keras.saving.register_keras_serializable(package="classify")
class TaskTowers(keras.Model):
    """A fine and a coarse classifier, each a tower Conv(filters[0], 5)-pool-Conv(filters[1], 5)-pool-
    Dense(units) and a softmax head; the towers' weights are shared (`hard`), independent, or tied by
    `strength` · Σ‖W_fine − W_coarse‖² added to the loss (`soft`). Outputs {"fine", "coarse"}."""

    def __init__(self, num_fine=10, num_coarse=4, sharing="soft", strength=0.0, filters=(8, 16), units=64,
                 image_shape=(28, 28, 1), **kwargs):
        super().__init__(**kwargs)
        recipes.check_choice("sharing", sharing, SHARING)
        self.num_fine, self.num_coarse, self.sharing = int(num_fine), int(num_coarse), sharing
        self.strength = float(strength) if sharing == "soft" else 0.0
        self.filters, self.units, self.image_shape = tuple(int(f) for f in filters), int(units), tuple(image_shape)
        self.fine_tower = self._tower("fine")
        self.coarse_tower = self.fine_tower if sharing == "hard" else self._tower("coarse")
        self.fine_head = keras.layers.Dense(self.num_fine, activation="softmax", name="fine_head")
        self.coarse_head = keras.layers.Dense(self.num_coarse, activation="softmax", name="coarse_head")
        self.build((None, *self.image_shape))  # now: the custom train_step calls the layers directly

    def _tower(self, task):
        return [keras.layers.Rescaling(1 / 255.0, name=f"{task}_scale"),
                keras.layers.Conv2D(self.filters[0], 5, activation="relu", name=f"{task}_conv1"),
                keras.layers.MaxPooling2D(2, name=f"{task}_pool1"),
                keras.layers.Conv2D(self.filters[1], 5, activation="relu", name=f"{task}_conv2"),
                keras.layers.MaxPooling2D(2, name=f"{task}_pool2"),
                keras.layers.Flatten(name=f"{task}_flatten"),
                keras.layers.Dense(self.units, activation="relu", name=f"{task}_dense")]

    def build(self, input_shape):
        """Build the layers; the coarse tower starts as a copy of the fine one, so the distance
        between the towers is what training does to them (and λ does not first have to pull
        two random initializations together)."""
        shape = tuple(input_shape)
        for fine, coarse in zip(self.fine_tower, self.coarse_tower):
            fine.build(shape)
            if coarse is not fine:
                coarse.build(shape)
                for a, b in zip(fine.weights, coarse.weights):
                    b.assign(a)
            shape = fine.compute_output_shape(shape)
        self.fine_head.build(shape)
        self.coarse_head.build(shape)
        self.built = True

    def tied_pairs(self):
        """Corresponding weights of the two towers, (fine, coarse): the terms of the penalty."""
        if self.sharing == "hard":
            return []
        return [(a, b) for fine, coarse in zip(self.fine_tower, self.coarse_tower)
                for a, b in zip(fine.weights, coarse.weights)]

    def tower_distance(self):
        """Σ over corresponding weights of ‖W_fine − W_coarse‖² (0 for hard sharing)."""
        return sum((keras.ops.sum(keras.ops.square(a - b)) for a, b in self.tied_pairs()), 0.0)

    def call(self, images):
        """Both tasks on the same images (prediction): {"fine": p(class), "coarse": p(category)}."""
        return {"fine": self.fine_head(self._tower_output(self.fine_tower, images)),
                "coarse": self.coarse_head(self._tower_output(self.coarse_tower, images))}

    @staticmethod
    def _tower_output(tower, x):
        for layer in tower:
            x = layer(x)
        return x

    def penalty(self):
        """strength · Σ‖W_fine − W_coarse‖²: what soft sharing adds to the loss."""
        return self.strength * self.tower_distance() if self.strength else 0.0

    def train_step(self, batch):
        """One step on a fine batch and a coarse batch (the tasks have training sets of their own
        sizes): loss = CE(fine) + CE(coarse) + penalty."""
        import tensorflow as tf

        (x_fine, y_fine), (x_coarse, y_coarse) = batch
        with tf.GradientTape() as tape:
            fine = self.fine_head(self._tower_output(self.fine_tower, x_fine), training=True)
            coarse = self.coarse_head(self._tower_output(self.coarse_tower, x_coarse), training=True)
            fine_loss = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(y_fine, fine))
            coarse_loss = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(y_coarse, coarse))
            penalty = self.penalty()
            loss = fine_loss + coarse_loss + penalty
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        return {"loss": loss, "fine_loss": fine_loss, "coarse_loss": coarse_loss, "penalty": penalty}

    def get_config(self):
        return {**super().get_config(), "num_fine": self.num_fine, "num_coarse": self.num_coarse,
                "sharing": self.sharing, "strength": self.strength, "filters": list(self.filters),
                "units": self.units, "image_shape": list(self.image_shape)}


def split_arrays(images, split, n=None):
    """The first `n` images and class labels of a split, as arrays."""
    x, y = zip(*getattr(images, split).batch(4096).as_numpy_iterator())
    return np.concatenate(x)[:n], np.concatenate(y)[:n]


def task_batches(fine, coarse, *, batch_size=32, seed=0):
    """Endless pairs (fine batch, coarse batch) for `TaskTowers.train_step`: `fine` and `coarse` are
    (images, class labels) of the images that carry a fine label and of those that carry a coarse
    one (the category of their class); each set is shuffled and repeated on its own."""
    import tensorflow as tf

    def endless(x, y):
        return (tf.data.Dataset.from_tensor_slices((x, y)).repeat()
                .shuffle(min(len(x), 10_000), seed=seed).batch(batch_size))

    categories = np.asarray(recipes.FASHION_COARSE)[coarse[1]]
    return tf.data.Dataset.zip((endless(*fine), endless(coarse[0], categories))).prefetch(2)


def train_towers(batches, val, *, sharing, strength=0.0, steps, learning_rate=0.02, seed=0):
    """Train one setup for `steps` SGD steps (momentum 0.9) on `task_batches`; returns its fine
    accuracy on `val` (images, class labels) and the towers' distance at the end."""
    training.set_seed(seed)
    model = TaskTowers(sharing=sharing, strength=strength)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=0.9))
    model.fit(batches, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0)
    fine = model.predict(val[0], batch_size=1024, verbose=0)["fine"]
    return float((fine.argmax(axis=1) == val[1]).mean()), float(model.tower_distance())


def run(*, out=None, small=False, seed=0):
    """The multi-task study: fine-task validation accuracy of independent towers, hard sharing and
    soft sharing for a sweep of λ, each setup over a few seeds; PNG and table."""
    import matplotlib.pyplot as plt

    folder = training.make_output_dir(os.path.join(out or os.path.join("runs", "classify", "study"),
                                                   "multitask"))
    n_fine, n_coarse = 50, 3000
    steps, strengths, seeds = (200, (0.1, 1.0), 1) if small else (400, (0.01, 0.03, 0.1, 1.0), 3)
    images = data.load_dataset("fashion_mnist", seed=seed, limit=n_coarse)
    x, y = split_arrays(images, "train")
    val = split_arrays(images, "val", n=2000)
    setups = [("independent", 0.0), ("hard", 0.0)] + [("soft", s) for s in strengths]
    results = []
    for sharing, strength in setups:
        runs = []
        for i in range(seeds):
            batches = task_batches((x[:n_fine], y[:n_fine]), (x, y), seed=seed + i)
            runs.append(train_towers(batches, val, sharing=sharing, strength=strength, steps=steps, seed=seed + i))
        accuracy, distance = np.array(runs).T
        results.append(dict(sharing=sharing, strength=strength, accuracy=accuracy.tolist(),
                            mean=float(accuracy.mean()), std=float(accuracy.std(ddof=1)) if seeds > 1 else 0.0,
                            distance=float(distance.mean())))
        print(f"multitask study: {sharing} λ={strength:g}: fine accuracy {accuracy.mean():.4f}")
    print_table(f"multi-task: fine-task accuracy on 2,000 Fashion-MNIST validation images; {n_fine} images with "
                f"a fine label, {n_coarse} with a coarse one; {steps} SGD steps, mean ± std over {seeds} seed(s)",
                ["setup", "λ", "fine accuracy", "± std", "Σ‖W_fine − W_coarse‖²"],
                [[r["sharing"], r["strength"], r["mean"], r["std"], r["distance"]] for r in results])

    soft = [r for r in results if r["sharing"] == "soft"]
    lam = [r["strength"] for r in soft]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.errorbar(lam, [r["mean"] for r in soft], [r["std"] for r in soft], fmt="o-", capsize=3,
                  label="soft sharing")
    for r, color in zip(results[:2], ("C1", "C2")):
        left.axhline(r["mean"], color=color, ls="--", label=f"{r['sharing']}: {r['mean']:.3f}")
        left.axhspan(r["mean"] - r["std"], r["mean"] + r["std"], color=color, alpha=0.12)
    left.set_xscale("log")
    left.set_xlabel("λ")
    left.set_ylabel("fine validation accuracy")
    left.set_title(f"fine task: {n_fine} fine labels, {n_coarse} coarse labels", fontsize=10)
    left.legend(fontsize=8)
    left.grid(alpha=0.3, which="both")
    right.loglog(lam, [r["distance"] for r in soft], "o-", label="soft sharing")
    right.axhline(results[0]["distance"], color="C1", ls="--", label="independent (λ = 0)")
    right.set_xlabel("λ")
    right.set_ylabel("Σ‖W_fine − W_coarse‖² after training")
    right.set_title("the penalty holds the towers together", fontsize=10)
    right.legend(fontsize=8)
    right.grid(alpha=0.3, which="both")
    png = plots.save_figure(fig, os.path.join(folder, "soft_sharing.png"))
    summary = {"results": results, "n_fine": n_fine, "n_coarse": n_coarse, "steps": steps}
    with open(os.path.join(folder, "multitask.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"wrote {png}\nwrote {os.path.join(folder, 'multitask.json')}")
    return {**summary, "pngs": [png]}
