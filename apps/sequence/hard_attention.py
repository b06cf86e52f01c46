"""Experiment: hard attention trained with REINFORCE next to soft attention.

A Fashion-MNIST item (28 × 28) sits at a random position on a blank 64 × 64 canvas, and the classifier
may look at it only through one 28 × 28 glimpse: where to look is the first decision. The candidate glimpse
positions are a 10 × 10 grid (stride 4 pixels; the best one is at most 2 pixels off the item). Every model
has the same parts:

  where   a coarse 16 × 16 view of the canvas (4 × 4 average pooling, the periphery of Mnih et al.'s glimpse
          sensor) -> Dense -> logits over the 100 positions; its weights start at zero, so every model starts
          looking uniformly at random
  what    a small CNN on the full-resolution glimpse -> a 64-feature vector; Dense -> class logits

and differs in how the position is chosen:

  hard    (Mnih et al. 2014, "Recurrent Models of Visual Attention"; Xu et al. 2015, hard attention) the
          position l is *sampled* from the policy π(l | coarse view) = softmax(logits), and only that glimpse
          is classified. Sampling has no gradient, so the policy learns by REINFORCE (Williams 1992): with
          reward r = 1 when the glimpse was classified correctly and a learned baseline b(coarse view),
            ∇_θ E[r] = E[(r − b) ∇_θ log π(l)]      (unbiased for any b that does not depend on l)
          estimated by one sample per image; b is fitted to r by squared error and only reduces the
          variance. The CNN and classifier learn by backpropagation of the cross-entropy.
  soft    (Xu et al. 2015, soft attention; Bahdanau et al. 2015) the glimpse features of all 49 positions
          are averaged with weights α = softmax(logits): differentiable end to end, plain backpropagation,
          but it must look everywhere (here one CNN pass over the canvas, ~5 glimpses' work; in general the
          cost grows with the number of positions, while the hard model's stays at one glimpse).
  random  positions drawn uniformly and never learned: what the glimpse classifier achieves without
          knowing where to look (the baseline hard attention has to beat).
"""

import os
import time

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from core import plots, training

CANVAS, GLIMPSE, STRIDE, POOL, ITEM = 64, 28, 4, 4, 28
MODES = ("hard", "soft", "random")


# --- data ----------------------------------------------------------------------------------------------------

def fashion_items(*, train, test, seed=0):
    """Fashion-MNIST items as ((x, y) of the first `train` training images, (x, y) of the first `test` test images,
    class names); x (n, 28, 28) float32 in [0, 1], y (n,) int32."""
    from core import data

    dataset = data.load_dataset("fashion_mnist", seed=seed, limit=max(train, test))

    def arrays(split, count):
        x, y = next(getattr(dataset, split).take(count).batch(count).as_numpy_iterator())
        return x[..., 0].astype(np.float32) / 255.0, y.astype(np.int32)

    return arrays("train", train), arrays("test", test), dataset.class_names


def place_on_canvas(items, rng, size=CANVAS):
    """Each item pasted at a uniformly random position on a blank canvas: (canvases (n, size, size, 1),
    top-left corners (n, 2) as (row, column))."""
    n, side = items.shape[0], items.shape[1]
    corners = rng.integers(0, size - side + 1, size=(n, 2))
    canvases = np.zeros((n, size, size, 1), np.float32)
    for canvas, item, (row, col) in zip(canvases, items, corners):
        canvas[row:row + side, col:col + side, 0] = item
    return canvases, corners


def grid_corners():
    """Top-left (row, column) of every candidate glimpse, row-major: (L, 2)."""
    steps = np.arange(0, CANVAS - GLIMPSE + 1, STRIDE)
    return np.array([(r, c) for r in steps for c in steps])


def coverage(corners, locations):
    """Share of each item's 28 × 28 box inside the chosen glimpse: (n,) in [0, 1]."""
    glimpses = grid_corners()[np.asarray(locations)]
    overlap = np.clip(np.minimum(corners + ITEM, glimpses + GLIMPSE) - np.maximum(corners, glimpses), 0, None)
    return overlap.prod(axis=1) / ITEM ** 2


# --- layers and networks -------------------------------------------------------------------------------------

@keras.saving.register_keras_serializable(package="suite")
class GlimpseCrop(layers.Layer):
    """[canvas (batch, S, S, C), position index (batch,)] -> the glimpse (batch, G, G, C) whose top-left corner is
    grid position `index` (row-major, `stride` pixels apart): two gathers, rows then columns."""

    def __init__(self, glimpse_size, stride, **kwargs):
        super().__init__(**kwargs)
        self.glimpse_size, self.stride = int(glimpse_size), int(stride)

    def call(self, inputs):
        canvas, index = inputs
        per_row = (canvas.shape[1] - self.glimpse_size) // self.stride + 1
        index = ops.cast(index, "int32")
        offsets = ops.arange(self.glimpse_size, dtype="int32")[None, :]
        rows = (index // per_row * self.stride)[:, None] + offsets
        cols = (index % per_row * self.stride)[:, None] + offsets
        band = ops.take_along_axis(canvas, rows[:, :, None, None], axis=1)
        return ops.take_along_axis(band, cols[:, None, :, None], axis=2)

    def compute_output_shape(self, input_shapes):
        canvas = input_shapes[0]
        return (canvas[0], self.glimpse_size, self.glimpse_size, canvas[-1])

    def get_config(self):
        return {**super().get_config(), "glimpse_size": self.glimpse_size, "stride": self.stride}


def build_networks(*, classes=10, features=64, seed=0):
    """dict of Keras models: crop (canvas, position -> glimpse), where (canvas -> position logits), baseline
    (canvas -> expected reward), what (image -> feature map), head (features -> class logits).

    `what` is fully convolutional and its total stride is 4 = the grid's: on one glimpse it gives a 1 × 1 map
    (that glimpse's features), on the whole canvas the 10 × 10 map of every grid glimpse's features at once
    (the last 5 × 5 convolution is the Dense layer of the glimpse network, slid over the canvas). So the soft
    model pays for one pass over the canvas (5 glimpses' pixels), not 100 glimpses."""
    keras.utils.set_random_seed(seed)
    positions = len(grid_corners())
    canvas = keras.Input((CANVAS, CANVAS, 1), name="canvas")
    coarse = layers.Flatten()(layers.AveragePooling2D(POOL, name="coarse_view")(canvas))
    where = keras.Model(canvas, layers.Dense(positions, kernel_initializer="zeros", name="position_logits")(coarse),
                        name="where")
    baseline = keras.Model(canvas, layers.Dense(1, kernel_initializer="zeros", name="expected_reward")(coarse),
                           name="baseline")
    window = ((GLIMPSE - 2) // 2 - 2) // 2  # the glimpse's side after two 3x3 convolutions and 2x2 poolings: 5
    what = keras.Sequential([keras.Input((None, None, 1)),
                             layers.Conv2D(16, 3, activation="relu"), layers.MaxPooling2D(),
                             layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(),
                             layers.Conv2D(features, window, activation="relu")], name="what")
    head = keras.Sequential([keras.Input((features,)), layers.Dense(classes)], name="head")
    crop = GlimpseCrop(GLIMPSE, STRIDE, name="glimpse_crop")
    return {"crop": crop, "where": where, "baseline": baseline, "what": what, "head": head}


# --- REINFORCE ---------------------------------------------------------------------------------------------------

def sample_categorical(logits, uniforms):
    """One sample per row of softmax(logits) from given uniforms in (0, 1) (Gumbel-max: argmax of
    logits + Gumbel noise), so the draws are fixed by a NumPy seed on any machine."""
    return tf.argmax(logits - tf.math.log(-tf.math.log(uniforms)), axis=-1, output_type=tf.int32)


def reinforce_surrogate(logits, actions, rewards, baselines):
    """Per example (r − b) · log π(a): its gradient is the REINFORCE estimate (r − b) ∇ log π(a) of
    ∇ E[r]. The advantage r − b is a constant for the gradient (stop_gradient): the baseline is trained
    by its own loss and must not steer the policy."""
    log_pi = tf.gather(tf.nn.log_softmax(logits), actions, batch_dims=1)
    return tf.stop_gradient(rewards - baselines) * log_pi


# --- the three models --------------------------------------------------------------------------------------------

class GlimpseClassifier:
    """The networks of `build_networks` and one way to choose the glimpse (`mode`: hard, soft, random)."""

    def __init__(self, mode, *, classes=10, seed=0, learning_rate=2e-3, policy_learning_rate=3e-2):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.nets = build_networks(classes=classes, seed=seed)
        self.positions = self.nets["where"].output_shape[-1]
        # backprop trains the glimpse classifier (and soft attention's where) at one rate; REINFORCE trains the
        # hard policy and its baseline with their own optimizer and rate (their gradients are noisier, smaller)
        self.classifier_variables = self.nets["what"].trainable_variables + self.nets["head"].trainable_variables
        if mode == "soft":
            self.classifier_variables += self.nets["where"].trainable_variables
        self.reinforce_variables = self.nets["where"].trainable_variables + self.nets["baseline"].trainable_variables
        self.optimizer = keras.optimizers.Adam(learning_rate)
        self.policy_optimizer = keras.optimizers.Adam(policy_learning_rate)
        self._step = None

    def glimpse_logits(self, canvas, locations):
        """Class logits from the glimpse at `locations` (batch,) only."""
        features = self.nets["what"](self.nets["crop"]([canvas, locations]))  # (batch, 1, 1, features)
        return self.nets["head"](features[:, 0, 0, :])

    def feature_map(self, canvas):
        """Every grid glimpse's features at once: (batch, L, features), row-major like `grid_corners`."""
        features = self.nets["what"](canvas)
        return tf.reshape(features, [tf.shape(features)[0], -1, features.shape[-1]])

    def soft_logits(self, canvas):
        """Class logits of the α-weighted average of all glimpses' features; also α (batch, L)."""
        alpha = tf.nn.softmax(self.nets["where"](canvas))
        return self.nets["head"](tf.einsum("bl,blf->bf", alpha, self.feature_map(canvas))), alpha

    def train_step(self, canvas, labels, uniforms):
        """One Adam step; returns (classification loss, mean reward of the sampled glimpses)."""
        if self._step is None:
            self._step = tf.function(self._train_step)
        loss, reward = self._step(tf.constant(canvas), tf.constant(labels), tf.constant(uniforms))
        return float(loss), float(reward)

    def _train_step(self, canvas, labels, uniforms):
        with tf.GradientTape(persistent=True) as tape:
            if self.mode == "soft":
                class_logits, _ = self.soft_logits(canvas)
            else:
                position_logits = self.position_logits(canvas)
                locations = sample_categorical(position_logits, uniforms)
                class_logits = self.glimpse_logits(canvas, locations)
            ce = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, class_logits, from_logits=True))
            reward = tf.cast(tf.equal(tf.argmax(class_logits, -1, output_type=tf.int32), labels), tf.float32)
            if self.mode == "hard":
                expected = self.nets["baseline"](canvas)[:, 0]
                policy_loss = -tf.reduce_mean(reinforce_surrogate(position_logits, locations, reward, expected))
                reinforce_loss = policy_loss + tf.reduce_mean(tf.square(reward - expected))
        self.optimizer.apply_gradients(zip(tape.gradient(ce, self.classifier_variables), self.classifier_variables))
        if self.mode == "hard":
            self.policy_optimizer.apply_gradients(zip(tape.gradient(reinforce_loss, self.reinforce_variables),
                                                      self.reinforce_variables))
        del tape
        return ce, tf.reduce_mean(reward)

    def position_logits(self, canvas):
        """Logits of π(l | canvas); the random model's are zero (uniform) whatever its weights."""
        logits = self.nets["where"](canvas)
        return tf.zeros_like(logits) if self.mode == "random" else logits

    def predict(self, canvas, *, uniforms=None, uniform_policy=False, batch_size=500):
        """dict(logits, locations (the glimpse used; soft: argmax α), alpha (batch, L)): hard and random
        glimpses are sampled from `uniforms` when given; without them hard takes the most probable position
        (greedy). uniform_policy=True: this model's classifier at uniformly random positions."""
        out = {"logits": [], "locations": [], "alpha": []}
        for start in range(0, len(canvas), batch_size):
            batch = tf.constant(canvas[start:start + batch_size])
            if self.mode == "soft" and not uniform_policy:
                logits, alpha = self.soft_logits(batch)
                locations = tf.argmax(alpha, -1, output_type=tf.int32)
            else:
                position_logits = self.position_logits(batch)
                if uniform_policy:
                    position_logits = tf.zeros_like(position_logits)
                alpha = tf.nn.softmax(position_logits)
                if uniforms is None:
                    locations = tf.argmax(position_logits, -1, output_type=tf.int32)
                else:
                    locations = sample_categorical(position_logits, tf.constant(uniforms[start:start + batch_size]))
                logits = self.glimpse_logits(batch, locations)
            for key, value in (("logits", logits), ("locations", locations), ("alpha", alpha)):
                out[key].append(value.numpy())
        return {key: np.concatenate(value) for key, value in out.items()}


def train(mode, canvases_fn, labels, *, epochs, batch_size=64, seed=0, log=None, **options):
    """Train one `GlimpseClassifier`; `canvases_fn(epoch)` places the training items anew each epoch
    (returns canvases, corners). Returns (model, per-step history of (loss, reward))."""
    model = GlimpseClassifier(mode, seed=seed, **options)
    rng = np.random.default_rng(seed)
    history = []
    for epoch in range(epochs):
        canvases, _ = canvases_fn(epoch)
        order = rng.permutation(len(labels))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            index = order[start:start + batch_size]
            uniforms = rng.uniform(1e-12, 1.0, size=(batch_size, model.positions))
            history.append(model.train_step(canvases[index], labels[index], uniforms.astype(np.float32)))
        if log:
            recent = np.mean(history[-50:], axis=0)
            log(f"  {mode}: epoch {epoch + 1}/{epochs}: loss {recent[0]:.3f}, glimpse accuracy {recent[1]:.3f}")
    return model, np.array(history)


def random_policy_on_item(corners):
    """Exact share of uniformly random glimpses that hold at least half of the item, over these canvases."""
    positions = len(grid_corners())
    shares = [coverage(corners, np.full(len(corners), index)) for index in range(positions)]
    return float(np.mean(np.array(shares) >= 0.5))


def evaluate(model, canvases, labels, corners, *, seed=0):
    """Accuracy and glimpse placement on test canvases: `sampled` glimpses (soft: the α-weighted model and its
    most attended position), `greedy` (hard: the most probable position) and `random glimpses` (this model's
    classifier at uniformly random positions). `on_item`: share of glimpses that hold at least half of the item;
    `coverage`: mean share of the item inside the glimpse."""
    uniforms = np.random.default_rng(seed).uniform(1e-12, 1.0, size=(len(labels), model.positions))
    uniforms = uniforms.astype(np.float32)
    runs = {"sampled": model.predict(canvases, uniforms=uniforms)}
    if model.mode == "hard":
        runs["greedy"] = model.predict(canvases)
    if model.mode != "random":
        runs["random glimpses"] = model.predict(canvases, uniforms=uniforms, uniform_policy=True)
    result = {}
    for name, out in runs.items():
        share = coverage(corners, out["locations"])
        result[name] = {"accuracy": float(np.mean(np.argmax(out["logits"], -1) == labels)),
                        "on_item": float(np.mean(share >= 0.5)), "coverage": float(np.mean(share)),
                        "locations": out["locations"], "alpha": out["alpha"]}
    return result


# --- export, figures, the experiment ------------------------------------------------------------------------------

def inference_model(model):
    """The hard model for deployment: raw canvas pixels 0-255 (batch, 64, 64, 1) -> class probabilities from the
    glimpse at the policy's most probable position, and the policy π over the positions (greedy: no sampling)."""
    nets = model.nets
    canvas = keras.Input(nets["where"].input_shape[1:], name="canvas")
    scaled = layers.Rescaling(1 / 255.0)(canvas)
    policy = layers.Softmax(name="glimpse_probabilities")(nets["where"](scaled))
    _, most_probable = ops.top_k(policy, k=1)  # (top_k, not argmax: a TFLite builtin without extra ops)
    glimpse = nets["crop"]([scaled, most_probable[:, 0]])
    features = layers.Reshape((-1,))(nets["what"](glimpse))
    probabilities = layers.Softmax(name="probabilities")(nets["head"](features))
    return keras.Model(canvas, [probabilities, policy], name="hard_attention")


def export_hard(model, sample_canvases, calibration_canvases, class_names, export_dir="saved_models", version=None,
                kinds=("float", "dynamic")):
    """SavedModel (canvas -> probabilities, glimpse_probabilities) + TFLite files (`kinds`, and int8 calibrated on
    `calibration_canvases`, training canvases in [0, 1] like `sample_canvases`), parity-checked: every probability
    within TOLERANCES[kind]."""
    from core import export

    calibration = np.asarray(calibration_canvases * 255.0, np.float32)
    report = export.export_model(inference_model(model), export.export_folder("sequence", "hard_attention", export_dir),
                                 input_names=["canvas"], output_names=["probabilities", "glimpse_probabilities"],
                                 sample_inputs={"canvas": np.asarray(sample_canvases * 255.0, np.float32)},
                                 representative_data=np.array_split(calibration, 4),
                                 class_names=list(class_names), version=version, kinds=kinds)
    print(f"wrote SavedModel {report['saved_model']} (canvas (B, {CANVAS}, {CANVAS}, 1) 0-255 -> probabilities, "
          f"glimpse_probabilities over the {model.positions} positions)")
    for kind, path in report["tflite"].items():
        print(f"wrote TFLite {path} (max |difference| from the SavedModel {report['max_abs_diff'][kind]:.2g})")
    return report


def plot_attention(path, canvases, labels, corners, hard, soft, class_names, *, count=6, draws=16, seed=0):
    """Columns: test canvases. Rows: the hard policy's sampled glimpses (thin red, `draws` of them) and its greedy
    glimpse (yellow) with the item's box (green, dashed); π over the glimpse centres; soft attention's α."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    grid, side = grid_corners(), int(np.sqrt(len(grid_corners())))
    extent = [GLIMPSE / 2 - STRIDE / 2, GLIMPSE / 2 + STRIDE * (side - 0.5)] * 2
    extent[2:] = extent[2:][::-1]  # imshow: bottom, top
    hard_out, soft_out = hard.predict(canvases[:count]), soft.predict(canvases[:count])
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(3, count, figsize=(2.2 * count, 7))
    for j in range(count):
        pi, alpha = hard_out["alpha"][j], soft_out["alpha"][j]
        for ax in axes[:, j]:
            ax.imshow(canvases[j, :, :, 0], cmap="gray", vmin=0, vmax=1)
            ax.add_patch(Rectangle(corners[j][::-1] - 0.5, ITEM, ITEM, fill=False, ec="lime", ls="--", lw=1))
            ax.set_xticks([])
            ax.set_yticks([])
        for index in rng.choice(len(pi), size=draws, p=pi / pi.sum()):
            axes[0, j].add_patch(Rectangle(grid[index][::-1] - 0.5, GLIMPSE, GLIMPSE, fill=False, ec="red", lw=0.6,
                                           alpha=0.6))
        axes[0, j].add_patch(Rectangle(grid[hard_out["locations"][j]][::-1] - 0.5, GLIMPSE, GLIMPSE, fill=False,
                                       ec="yellow", lw=1.5))
        axes[0, j].set_title(f"{class_names[labels[j]]}\nhard: {class_names[np.argmax(hard_out['logits'][j])]}",
                             fontsize=8)
        axes[1, j].imshow(pi.reshape(side, side), cmap="inferno", alpha=0.6, extent=extent)
        axes[1, j].set_title(f"π max {pi.max():.2f}", fontsize=8)
        axes[2, j].imshow(alpha.reshape(side, side), cmap="inferno", alpha=0.6, extent=extent)
        axes[2, j].set_title(f"soft: {class_names[np.argmax(soft_out['logits'][j])]}, α max {alpha.max():.2f}",
                             fontsize=8)
        for ax in axes[1:, j]:  # the heat-maps cover the glimpse centres only; show the whole canvas
            ax.set_xlim(-0.5, CANVAS - 0.5)
            ax.set_ylim(CANVAS - 0.5, -0.5)
    for row, label in enumerate(("hard: sampled (red)\nand greedy (yellow)", "hard: policy π\nover glimpse centres",
                                 "soft: weights α\nover glimpse centres")):
        axes[row, 0].set_ylabel(label, fontsize=8)
    fig.suptitle("Where the models look (green dashed: the item)", fontsize=10)
    fig.tight_layout()
    return plots.save_figure(fig, path)


def run(*, run, small=False, seed=0, export_dir="saved_models"):
    """The experiment: PNGs and the table into the folder `run`, the hard model's export under `export_dir`."""
    import matplotlib.pyplot as plt

    from apps.basics.common import print_table

    folder = training.make_output_dir(run)
    if export_dir:
        training.make_output_dir(export_dir)  # an unwritable export folder is reported now, not after training
    train_count, epochs, test_count = (2560, 4, 1000) if small else (6400, 5, 2000)
    (x, y), (x_test, y_test), class_names = fashion_items(train=train_count, test=test_count, seed=seed)
    canvases, corners = place_on_canvas(x_test, np.random.default_rng(seed + 1))
    runs = {}
    for mode in MODES:
        start = time.perf_counter()  # every epoch places the training items at new positions
        model, history = train(mode, lambda epoch: place_on_canvas(x, np.random.default_rng([seed, epoch])), y,
                               epochs=epochs, seed=seed, log=print)
        runs[mode] = {"model": model, "history": history, "seconds": time.perf_counter() - start,
                      "test": evaluate(model, canvases, y_test, corners, seed=seed)}
    rows = []
    for mode, r in runs.items():
        for name, e in r["test"].items():
            rows.append([f"{mode}: {name}", e["accuracy"], e["on_item"], e["coverage"],
                         f"{r['seconds']:.0f}" if name == "sampled" else ""])
    rows.append(["uniform policy (exact)", "", random_policy_on_item(corners), "", ""])
    print_table(f"{test_count} test canvases ({CANVAS}x{CANVAS}, one {GLIMPSE}x{GLIMPSE} glimpse, "
                f"{runs['hard']['model'].positions} positions); {train_count} training items x {epochs} epochs, "
                f"batch 64", ["model: glimpses", "accuracy", "on item (≥ half)", "item share in glimpse",
                              "train s"], rows)

    pngs = [plot_attention(os.path.join(folder, "attention.png"), canvases, y_test, corners, runs["hard"]["model"],
                           runs["soft"]["model"], class_names, seed=seed)]
    fig, ax = plt.subplots(figsize=(7, 4))
    for mode, r in runs.items():
        reward = np.convolve(r["history"][:, 1], np.ones(20) / 20, mode="valid")
        ax.plot(np.arange(len(reward)) + 20, reward, label=f"{mode} ({r['seconds']:.0f} s)")
    ax.set_xlabel("training step (batch 64)")
    ax.set_ylabel("training-batch accuracy (hard: the reward)\n20-step mean")
    ax.grid(alpha=0.3)
    ax.legend()
    pngs.append(plots.save_figure(fig, os.path.join(folder, "training.png")))
    if export_dir:
        training_canvases, _ = place_on_canvas(x[:64], np.random.default_rng([seed, epochs]))  # int8's calibration
        export_hard(runs["hard"]["model"], canvases[:64], training_canvases, class_names, export_dir=export_dir)
    for png in pngs:
        print(f"wrote {png}")
    return {"runs": runs, "pngs": pngs}
