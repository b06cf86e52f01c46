"""Experiment 2: backpropagation from scratch in NumPy.

`ScratchMLP` is a multilayer perceptron — dense layers with sigmoid, tanh or
ReLU hidden units, a softmax output, and either the cross-entropy or the L2
loss — whose forward and backward passes are written out with the chain rule:

  forward   a⁰ = x,  zˡ = aˡ⁻¹Wˡ + bˡ,  aˡ = f(zˡ),  p = softmax(zᴸ)
  output    cross-entropy  L = -1/n Σ log p_y        →  δᴸ = (p - t)/n
            L2             L = 1/(2n) Σ ‖p - t‖²     →  g = (p - t)/n,  δᴸ = p ⊙ (g - Σ_k g_k p_k)
            (the second line is the softmax Jacobian diag(p) - ppᵀ applied to g)
  backward  ∂L/∂Wˡ = aˡ⁻¹ᵀ δˡ,  ∂L/∂bˡ = Σ_rows δˡ,  δˡ⁻¹ = (δˡ Wˡᵀ) ⊙ f′(zˡ⁻¹)

Its gradients are compared with `tf.GradientTape` on the same weights (float64)
and with central finite differences (L(θ+ε) - L(θ-ε)) / 2ε.
"""

import os

import numpy as np

from apps.basics.common import experiment_folder, print_table, save

ACTIVATIONS = {
    # name: (f(z), f'(z))
    "sigmoid": (lambda z: 1 / (1 + np.exp(-z)), lambda z: (s := 1 / (1 + np.exp(-z))) * (1 - s)),
    "tanh": (np.tanh, lambda z: 1 - np.tanh(z) ** 2),
    "relu": (lambda z: np.maximum(z, 0), lambda z: (z > 0).astype(z.dtype)),
}
LOSSES = ("cross_entropy", "l2")


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class ScratchMLP:
    """Dense layers of `sizes` (input, hidden..., classes); `activations` is one name or one per hidden layer."""

    def __init__(self, sizes, activations="relu", loss="cross_entropy", seed=0):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}")
        hidden = len(sizes) - 2
        self.activations = [activations] * hidden if isinstance(activations, str) else list(activations)
        if len(self.activations) != hidden or any(a not in ACTIVATIONS for a in self.activations):
            raise ValueError(f"need {hidden} activations out of {sorted(ACTIVATIONS)}")
        self.loss_name = loss
        rng = np.random.default_rng(seed)
        self.params = []  # [W1, b1, W2, b2, ...]
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            self.params += [rng.normal(scale=np.sqrt(2.0 / (fan_in + fan_out)), size=(fan_in, fan_out)),
                            rng.normal(scale=0.1, size=fan_out)]

    def forward(self, x):
        """Class probabilities and the cache the backward pass needs."""
        a, cache = np.asarray(x, np.float64), []
        layers = len(self.params) // 2
        for i in range(layers):
            w, b = self.params[2 * i], self.params[2 * i + 1]
            z = a @ w + b
            cache.append((a, z))
            a = ACTIVATIONS[self.activations[i]][0](z) if i < layers - 1 else softmax(z)
        return a, cache

    def loss(self, x, labels):
        p, _ = self.forward(x)
        return self._loss(p, labels)

    def _loss(self, p, labels):
        n = len(labels)
        if self.loss_name == "cross_entropy":
            return float(-np.log(p[np.arange(n), labels] + 1e-300).mean())
        t = np.eye(p.shape[1])[labels]
        return float(0.5 * ((p - t) ** 2).sum() / n)

    def loss_and_gradients(self, x, labels):
        """L and [∂L/∂W1, ∂L/∂b1, ...] by backpropagation."""
        p, cache = self.forward(x)
        n = len(labels)
        t = np.eye(p.shape[1])[labels]
        if self.loss_name == "cross_entropy":
            delta = (p - t) / n
        else:
            g = (p - t) / n
            delta = p * (g - (g * p).sum(axis=1, keepdims=True))
        grads = [None] * len(self.params)
        for i in reversed(range(len(cache))):
            a_prev, _ = cache[i]
            grads[2 * i] = a_prev.T @ delta
            grads[2 * i + 1] = delta.sum(axis=0)
            if i > 0:
                delta = (delta @ self.params[2 * i].T) * ACTIVATIONS[self.activations[i - 1]][1](cache[i - 1][1])
        return self._loss(p, labels), grads

    def predict(self, x):
        return self.forward(x)[0].argmax(axis=1)


def tape_gradients(mlp, x, labels):
    """The same loss in TensorFlow (float64), differentiated by tf.GradientTape."""
    import tensorflow as tf

    tf_act = {"sigmoid": tf.sigmoid, "tanh": tf.tanh, "relu": tf.nn.relu}
    params = [tf.Variable(p) for p in mlp.params]
    x = tf.constant(np.asarray(x, np.float64))
    with tf.GradientTape() as tape:
        a = x
        layers = len(params) // 2
        for i in range(layers):
            z = a @ params[2 * i] + params[2 * i + 1]
            a = tf_act[mlp.activations[i]](z) if i < layers - 1 else z
        if mlp.loss_name == "cross_entropy":
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, a))
        else:
            t = tf.one_hot(labels, a.shape[1], dtype=tf.float64)
            loss = 0.5 * tf.reduce_sum((tf.nn.softmax(a) - t) ** 2) / len(labels)
    return float(loss), [g.numpy() for g in tape.gradient(loss, params)]


def finite_difference_gradients(mlp, x, labels, eps=1e-6):
    """Central differences, one parameter at a time."""
    grads = []
    for p in mlp.params:
        g = np.zeros_like(p)
        for index in np.ndindex(p.shape):
            old = p[index]
            p[index] = old + eps
            plus = mlp.loss(x, labels)
            p[index] = old - eps
            minus = mlp.loss(x, labels)
            p[index] = old
            g[index] = (plus - minus) / (2 * eps)
        grads.append(g)
    return grads


def relative_error(a, b):
    """max |a - b| / max(|a|, |b|, 1e-12) over the whole tensor."""
    return float(np.abs(a - b).max() / max(np.abs(a).max(), np.abs(b).max(), 1e-12))


def gradient_check(loss="cross_entropy", activations=("sigmoid", "tanh", "relu"), seed=0, n=8):
    """Backprop vs GradientTape vs finite differences on a 5-6-5-4-3 network; relative errors per tensor."""
    rng = np.random.default_rng(seed)
    mlp = ScratchMLP([5, 6, 5, 4, 3], list(activations), loss=loss, seed=seed)
    x, labels = rng.normal(size=(n, 5)), rng.integers(0, 3, size=n)
    value, grads = mlp.loss_and_gradients(x, labels)
    tape_value, tape = tape_gradients(mlp, x, labels)
    numeric = finite_difference_gradients(mlp, x, labels)
    names = [f"{'W' if i % 2 == 0 else 'b'}{i // 2 + 1}" for i in range(len(grads))]
    return {"loss": value, "tape_loss": tape_value, "names": names,
            "vs_tape": [relative_error(g, t) for g, t in zip(grads, tape)],
            "vs_finite_differences": [relative_error(g, f) for g, f in zip(grads, numeric)]}


def worked_example(z=(0.1, 0.15, 0.2), target=1):
    """The notes' example: softmax of z = (0.1, 0.15, 0.2), target class `target` (0-based), L2 loss
    L = ½‖softmax(z) - t‖². Returns p, L, ∂L/∂p, ∂L/∂z (chain rule) and ∂L/∂z by GradientTape."""
    import tensorflow as tf

    z = np.asarray(z, np.float64)
    t = np.eye(len(z))[target]
    p = softmax(z)
    dl_dp = p - t
    jacobian = np.diag(p) - np.outer(p, p)  # ∂p_i/∂z_j = p_i(δ_ij - p_j)
    dl_dz = jacobian @ dl_dp
    zt = tf.Variable(z)
    with tf.GradientTape() as tape:
        loss = 0.5 * tf.reduce_sum((tf.nn.softmax(zt) - t) ** 2)
    return {"z": z, "target": t, "p": p, "loss": float(0.5 * (dl_dp ** 2).sum()), "dL_dp": dl_dp,
            "jacobian": jacobian, "dL_dz": dl_dz, "dL_dz_tape": tape.gradient(loss, zt).numpy()}


def digits_arrays():
    """sklearn's 8x8 digits (through core.data at their native size) as flat [0, 1] features."""
    from core import data

    (x_train, y_train), (x_test, y_test) = data.load_digits_arrays(size=8)
    return (x_train.reshape(len(x_train), -1) / 255.0, y_train), (x_test.reshape(len(x_test), -1) / 255.0, y_test)


def train_digits(*, hidden=(64,), activation="relu", epochs=30, batch_size=32, learning_rate=0.3, seed=0):
    """Minibatch SGD with the scratch gradients; returns (mlp, history dict)."""
    (x_train, y_train), (x_test, y_test) = digits_arrays()
    mlp = ScratchMLP([x_train.shape[1], *hidden, 10], activation, seed=seed)
    rng = np.random.default_rng(seed)
    history = {"loss": [], "train_accuracy": [], "test_loss": [], "test_accuracy": []}
    for _ in range(epochs):
        order = rng.permutation(len(x_train))
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            _, grads = mlp.loss_and_gradients(x_train[batch], y_train[batch])
            for p, g in zip(mlp.params, grads):
                p -= learning_rate * g
        history["loss"].append(mlp.loss(x_train, y_train))
        history["train_accuracy"].append(float((mlp.predict(x_train) == y_train).mean()))
        history["test_loss"].append(mlp.loss(x_test, y_test))
        history["test_accuracy"].append(float((mlp.predict(x_test) == y_test).mean()))
    return mlp, history


def run(*, folder=None, small=False, seed=0):
    import matplotlib.pyplot as plt

    folder = experiment_folder(folder, "backprop")
    checks = {loss: gradient_check(loss, seed=seed) for loss in LOSSES}
    example = worked_example()
    mlp, history = train_digits(epochs=8 if small else 30, seed=seed)

    rows = []
    for loss, check in checks.items():
        for name, e_tape, e_fd in zip(check["names"], check["vs_tape"], check["vs_finite_differences"]):
            rows.append([loss, name, e_tape, e_fd])
    print_table("gradient check, 5-6-5-4-3 MLP (sigmoid, tanh, relu), max relative error per tensor",
                ["loss", "tensor", "vs GradientTape", "vs finite diff."], rows)

    np.set_printoptions(precision=6, suppress=True)
    print("\nworked example: z = (0.1, 0.15, 0.2) -> softmax -> L2 loss against target class 1, t = (0, 1, 0)")
    print(f"  p = softmax(z)         = {example['p']}")
    print(f"  L = 1/2 |p - t|^2      = {example['loss']:.6f}")
    print(f"  dL/dp = p - t          = {example['dL_dp']}")
    print(f"  dL/dz = (diag p - ppT)(p - t) = {example['dL_dz']}")
    print(f"  dL/dz by GradientTape  = {example['dL_dz_tape']}")

    print_table("scratch MLP 64-64-10 (ReLU, softmax + cross-entropy, SGD) on sklearn digits",
                ["epoch", "train loss", "train acc", "test loss", "test acc"],
                [[e + 1, history["loss"][e], history["train_accuracy"][e], history["test_loss"][e],
                  history["test_accuracy"][e]]
                 for e in sorted({0, len(history["loss"]) // 2, len(history["loss"]) - 1})])

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for loss, marker in zip(LOSSES, "os"):
        c = checks[loss]
        axes[0].semilogy(
            np.maximum(c["vs_tape"], 1e-17), marker + "-", label=f"{loss}: vs GradientTape (0 drawn at 1e-17)"
        )
        axes[0].semilogy(np.maximum(c["vs_finite_differences"], 1e-17), marker + "--", label=f"{loss}: vs finite diff.")
    axes[0].set_xticks(range(len(checks["l2"]["names"])), checks["l2"]["names"])
    axes[0].set_ylabel("max relative error")
    axes[0].set_title("backprop gradients vs autodiff and finite differences", fontsize=9)
    axes[0].legend(fontsize=7)
    axes[0].grid(alpha=0.3)
    epochs = np.arange(1, len(history["loss"]) + 1)
    axes[1].plot(epochs, history["loss"], "o-", label="train")
    axes[1].plot(epochs, history["test_loss"], "s-", label="test")
    axes[1].set_title("digits: cross-entropy", fontsize=9)
    axes[2].plot(epochs, history["train_accuracy"], "o-", label="train")
    axes[2].plot(epochs, history["test_accuracy"], "s-", label="test")
    axes[2].set_title(f"digits: accuracy (test {history['test_accuracy'][-1]:.3f})", fontsize=9)
    for ax in axes[1:]:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    png = save(fig, os.path.join(folder, "backprop.png"))
    print(f"wrote {png}")
    return {
        "checks": checks,
        "worked_example": example,
        "history": history,
        "pngs": [png],
        "test_accuracy": history["test_accuracy"][-1],
    }
