"""Experiment: vanishing gradients through time — Elman RNN vs LSTM vs GRU.

Backpropagation through time multiplies the error by one Jacobian per step. For the loss L of the last
output and an input x_t that lies T − t steps before the end,

  ∂L/∂x_t = ∂L/∂h_T · (∂h_T/∂h_{T−1}) ··· (∂h_{t+1}/∂h_t) · ∂h_t/∂x_t,

so ‖∂L/∂x_t‖ behaves like ρ^(T−t): its logarithm falls on a straight line in the distance from the end
(Bengio, Simard & Frasconi 1994; Hochreiter 1991). The per-step factor ρ is what the cells differ in:

  Elman   h_t = tanh(x_t W + h_{t−1} U + b):  ∂h_t/∂h_{t−1} = diag(1 − h_t²) Uᵀ. U starts orthogonal (it keeps
          lengths), so ρ is set by the tanh slopes 1 − h_t² < 1: the more the inputs drive the units, the
          faster the gradient vanishes.
  LSTM    c_t = f_t ⊙ c_{t−1} + i_t ⊙ g_t: along the cell state the Jacobian is diag(f_t), the forget gate,
          with no squashing in between (the "constant error carousel"). With the forget-gate bias at 1
          (Gers et al. 2000; Jozefowicz et al. 2015; Keras' unit_forget_bias) f starts near σ(1) = 0.73;
          with bias 0 near σ(0) = 0.5. Training can open f towards 1 where memory is needed.
  GRU     h_t = z_t ⊙ h_{t−1} + (1 − z_t) ⊙ ĥ_t: the update gate z plays the forget gate's part; with its
          bias at Keras' default 0 it starts near 0.5.

The experiment: the suite's cells (`layers.recurrent`) in `keras.layers.RNN`, a Dense readout of the last
state, on the "remember the first symbol" task: x_1 carries one of 4 symbols, x_2..x_T are standard-normal
noise (standardised inputs), the target is the first symbol, so only ∂L/∂x_1 carries the signal to learn
from. We measure ‖∂L/∂x_t‖ for every t with `tf.GradientTape`, check it against central finite
differences in float64, and train each cell briefly to see which can learn the task.
"""

import os

import numpy as np

from apps.basics.common import print_table
from core import plots, training

SYMBOLS, FEATURES, UNITS = 4, 8, 32
# label -> (cell, gate whose bias is set, value); the gated cells are shown at the usual and at the zero bias
CELLS = {
    "elman": ("elman", None, 0.0),
    "lstm (forget bias 1)": ("lstm", "forget", 1.0),
    "lstm (forget bias 0)": ("lstm", "forget", 0.0),
    "gru": ("gru", None, 0.0),
}


def memory_task(rng, batch, length, *, symbols=SYMBOLS, features=FEATURES, dtype=np.float32):
    """(x (batch, length, features), y (batch,)): x_1 = 3·one-hot(y) in the first `symbols` features,
    x_2.. standard-normal noise; the target is the first symbol."""
    x = rng.normal(size=(batch, length, features))
    y = rng.integers(0, symbols, batch)
    x[:, 0, :] = 0.0
    x[np.arange(batch), 0, y] = 3.0
    return x.astype(dtype), y.astype(np.int32)


def set_gate_bias(cell, gate, value):
    """Set one gate's bias in a built suite cell: the LSTM's forget gate (gate order i, f, c, o, as Keras)."""
    if gate != "forget":
        raise ValueError(f"unknown gate {gate!r}")
    bias, units = cell.bias.numpy(), cell.units
    bias[units:2 * units] = value
    cell.bias.assign(bias)


def recurrent_classifier(label, *, units=UNITS, features=FEATURES, symbols=SYMBOLS, seed=0, dtype="float32"):
    """Input (batch, time, features) of any length -> RNN(suite cell) -> logits over the symbols (last state)."""
    import keras

    from layers import ElmanCell, GRUCell, LSTMCell

    kind, gate, value = CELLS[label]
    keras.utils.set_random_seed(seed)
    cell = {"elman": ElmanCell, "lstm": LSTMCell, "gru": GRUCell}[kind](units, dtype=dtype)
    inputs = keras.Input((None, features), dtype=dtype)
    state = keras.layers.RNN(cell, dtype=dtype, name="rnn")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(symbols, dtype=dtype, name="readout")(state))
    if gate is not None:
        set_gate_bias(cell, gate, value)
    return model


def loss_fn(model, x, y):
    import keras
    import tensorflow as tf

    return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, model(x), from_logits=True))


def input_gradient_function(model):
    """A traced x, y -> ∂L/∂x (batch, time, features) of the mean cross-entropy L (`tf.GradientTape`), for any
    batch size and length: a graph runs the recurrence far faster than step-by-step eager ops."""
    import tensorflow as tf

    dtype = model.inputs[0].dtype

    @tf.function(input_signature=[tf.TensorSpec([None, None, model.inputs[0].shape[-1]], dtype),
                                  tf.TensorSpec([None], tf.int32)])
    def gradient(x, y):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = loss_fn(model, x, y)
        return tape.gradient(loss, x)

    return gradient


def gradient_norms(gradient, x, y):
    """‖∂L/∂x_t‖ for t = 1..T (the norm over the batch and the features), float64; `gradient` from
    `input_gradient_function`."""
    g = gradient(x, y).numpy().astype(np.float64)
    return np.sqrt(np.sum(g ** 2, axis=(0, 2)))


def decay_fit(norms, skip=5):
    """Least-squares line through ln ‖∂L/∂x_t‖ against the distance T − t (distances ≥ `skip`: the last
    few steps reach the loss through the gates' direct paths). Returns (slope per step, R²)."""
    distance = np.arange(len(norms))[::-1].astype(np.float64)
    keep = (distance >= skip) & (norms > 0)
    d, log_norm = distance[keep], np.log(norms[keep])
    slope, intercept = np.polyfit(d, log_norm, 1)
    residual = log_norm - (slope * d + intercept)
    return float(slope), float(1 - residual.var() / log_norm.var())


def finite_difference_check(label, *, length=12, batch=4, step=0, h=1e-3, seed=0):
    """The tape's ∂L/∂x_step against central differences, in float64, along the unit vector v of that
    gradient: v·∂L/∂x_step (= its norm) vs (L(x + h v) − L(x − h v)) / 2h at h and h/2.
    Returns dict(tape, fd_h, fd_h2, loss)."""
    model = recurrent_classifier(label, seed=seed, dtype="float64")
    x, y = memory_task(np.random.default_rng(seed), batch, length, dtype=np.float64)
    g = input_gradient_function(model)(x, y).numpy()[:, step]
    v = np.zeros_like(x)
    v[:, step] = g / np.linalg.norm(g)

    def central(width):
        return (float(loss_fn(model, x + width * v, y)) - float(loss_fn(model, x - width * v, y))) / (2 * width)

    return {"tape": float(np.sum(g * v[:, step])), "fd_h": central(h), "fd_h2": central(h / 2),
            "loss": float(loss_fn(model, x, y)), "h": h}


def ratios_over_lengths(labels, lengths, *, seeds, batch=64):
    """Per label: the ratio ‖∂L/∂x_1‖ / ‖∂L/∂x_T‖ at each length T (geometric mean over the seeds; each seed
    its own weights and data) and the mean norm curve at the longest length."""
    results, traced = {}, {}  # cell kind -> (model, its traced gradient): each label and seed brings its weights
    for label in labels:
        kind = CELLS[label][0]
        if kind not in traced:
            model = recurrent_classifier(label, seed=seeds[0])
            traced[kind] = model, input_gradient_function(model)
        model, gradient = traced[kind]
        ratios, curves = {T: [] for T in lengths}, []
        for seed in seeds:
            model.set_weights(recurrent_classifier(label, seed=seed).get_weights())
            rng = np.random.default_rng(seed)
            for T in lengths:
                norms = gradient_norms(gradient, *memory_task(rng, batch, T))
                ratios[T].append(norms[0] / norms[-1])
                if T == max(lengths):
                    curves.append(norms / norms[-1])
        log_curve = np.mean(np.log(np.maximum(curves, 1e-300)), axis=0)  # a norm that underflowed to 0: 1e-300
        geometric_mean = {T: float(np.exp(np.mean(np.log(np.maximum(r, 1e-300))))) for T, r in ratios.items()}
        results[label] = {"ratio": geometric_mean, "ratios": ratios, "log_curve": log_curve,
                          "fit": decay_fit(np.exp(log_curve))}
    return results


def train_memory(label, *, length, steps, batch=32, learning_rate=5e-3, seed=0, test_size=512):
    """Adam on the memory task at one length. Returns dict(accuracy before/after on fixed test sequences,
    norm curves before/after, loss per step)."""
    import keras
    import tensorflow as tf

    model = recurrent_classifier(label, seed=seed)
    optimizer = keras.optimizers.Adam(learning_rate)
    x_test, y_test = memory_task(np.random.default_rng(seed + 10_000), test_size, length)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(model, x, y)
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    def accuracy():
        return float(np.mean(np.argmax(model(x_test).numpy(), axis=-1) == y_test))

    gradient = input_gradient_function(model)
    before = {"accuracy": accuracy(), "norms": gradient_norms(gradient, x_test, y_test)}
    rng, losses = np.random.default_rng(seed), []
    for _ in range(steps):
        losses.append(float(step(*memory_task(rng, batch, length))))
    after = {"accuracy": accuracy(), "norms": gradient_norms(gradient, x_test, y_test)}
    return {"before": before, "after": after, "losses": np.array(losses)}


def run(*, run, small=False, seed=0):
    """The experiment; its PNGs go into the folder `run`."""
    import tensorflow as tf

    logger = tf.get_logger()  # one new traced function per model is the plan, not the "retracing" TF warns about
    level = logger.level
    logger.setLevel("ERROR")
    try:
        return _run(folder=run, small=small, seed=seed)
    finally:
        logger.setLevel(level)


def _run(*, folder, small, seed):
    import matplotlib.pyplot as plt

    folder = training.make_output_dir(folder)
    lengths = (10, 25, 50) if small else (10, 25, 50, 100)
    seeds = [seed + i for i in range(2 if small else 3)]
    train_length, train_steps = (20, 150) if small else (30, 600)

    at_init = ratios_over_lengths(CELLS, lengths, seeds=seeds)
    rows = [[label, r["fit"][0], np.exp(r["fit"][0]), r["fit"][1], *(r["ratio"][T] for T in lengths)]
            for label, r in at_init.items()]
    print_table(f"at initialisation: ‖∂L/∂x_1‖ / ‖∂L/∂x_T‖ (geometric mean over {len(seeds)} seeds; {UNITS} units, "
                f"{FEATURES} standard-normal input features, batch 64); slope of ln‖∂L/∂x_t‖ per step back "
                f"(T = {max(lengths)})", ["cell", "ln-slope/step", "factor/step", "R² of line",
                                          *(f"ratio T={T}" for T in lengths)], rows)

    check = finite_difference_check("elman", seed=seed)
    print(f"\nfinite differences (float64, elman, T = 12, step 1): tape {check['tape']:.10g}, "
          f"central h={check['h']:g}: {check['fd_h']:.10g}, h/2: {check['fd_h2']:.10g}")

    trained = {label: train_memory(label, length=train_length, steps=train_steps, seed=seed) for label in CELLS}
    rows = [[label, r["before"]["accuracy"], r["after"]["accuracy"], np.mean(r["losses"][:20]),
             np.mean(r["losses"][-20:]), r["before"]["norms"][0] / r["before"]["norms"][-1],
             r["after"]["norms"][0] / r["after"]["norms"][-1]] for label, r in trained.items()]
    print_table(f"after {train_steps} Adam steps (lr 5e-3, batch 32) on remember-the-first-symbol at T = "
                f"{train_length} (chance 0.25; 512 test sequences)",
                ["cell", "acc before", "acc after", "loss first 20", "loss last 20", "ratio before", "ratio after"],
                rows)

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for label, r in at_init.items():
        curve = r["log_curve"][::-1] / np.log(10)  # index = distance from the end
        axes[0].plot(np.arange(len(curve)), curve, label=f"{label} (×{np.exp(r['fit'][0]):.2f}/step)")
    axes[0].set_title(f"at initialisation, T = {max(lengths)} (mean over {len(seeds)} seeds)", fontsize=9)
    for (label, r), color in zip(trained.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        for when, style in (("before", ":"), ("after", "-")):
            norms = r[when]["norms"]
            axes[1].plot(np.arange(len(norms)), np.log10(norms[::-1] / norms[-1]), style, color=color,
                         label=f"{label} {when} (acc {r[when]['accuracy']:.2f})")
    axes[1].set_title(f"before (dotted) and after (solid) {train_steps} training steps, T = {train_length}",
                      fontsize=9)
    for ax in axes:
        ax.set_xlabel("distance from the end T − t")
        ax.set_ylabel("log10 ‖∂L/∂x_t‖ / ‖∂L/∂x_T‖")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    png = plots.save_figure(fig, os.path.join(folder, "vanishing.png"))
    print(f"wrote {png}")
    return {"at_init": at_init, "finite_differences": check, "trained": trained, "pngs": [png]}
