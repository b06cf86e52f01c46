"""Experiment: the degradation problem — a deeper plain network trains worse, a residual one does not.

He, Zhang, Ren & Sun 2016 ("Deep residual learning for image recognition", Fig. 1 and 4): with batch
normalization, so that neither the forward signals nor the gradients vanish, a 56-layer plain network
has a HIGHER TRAINING error than a 20-layer one. This is not overfitting (the training error itself is
worse) and not a lack of capacity: the deeper net could copy the shallow one and set its extra layers
to the identity. The solver just does not find that solution. A residual block

  y = relu(x + F(x)),   F(x) = BN(W₂ relu(BN(W₁ x)))

only has to learn the change F(x) = H(x) − x, and the identity is F = 0; with these shortcuts the
deeper network trains at least as well as the shallow one.

Here the networks are MLPs on small real data (the 8x8 digits with --small, 5,000 Fashion-MNIST images
otherwise), `depth` weight layers each: a Dense-BN-ReLU stem, (depth − 2)/2 blocks of two Dense-BN
layers and a linear classifier. The plain and the residual net of a depth have exactly the same layers
and parameters; the residual one adds x after each block. Every net gets the same SGD with momentum,
the same batches and the same number of steps.

One departure from the paper, and why: at these budgets (a few hundred to a few thousand steps; the
paper trains for 64,000 iterations) a deep residual net with the default initialization γ = 1 still
trains worse than the shallow nets, because each of its many blocks adds a random F(x) to the signal
at the start (measured on Fashion-MNIST, depth 30: training loss 0.29 after 20 epochs, against 0.10 and
0.15 for the depth-6 nets). We initialize γ of the LAST BN of each block to 0 (Goyal et al. 2017,
"Accurate, large minibatch SGD"; the standard "zero-γ" trick), so that each block starts as the
identity: the deep residual net starts as the shallow one and can only improve on it. The plain nets
cannot use the trick (γ = 0 would cut their signal), which is the point: the identity is easy to
represent only with a shortcut. The default run also trains the deep residual net with γ = 1, to show
that difference.

The table's first-step gradient norm shows one known cause of the degradation with BN (Yang et al.
2019, "A mean field theory of batch normalization"): in a deep plain BN net the gradient at
initialization grows with depth (measured: 1.7 at depth 4 and 15 at depth 16 on the digits; 5.6 at
depth 6 and 518 at depth 30 on Fashion-MNIST), and with shortcuts it does not.
"""

import os

import keras
import numpy as np

from apps.basics.common import digits_arrays, experiment_folder, load_arrays, print_table, save

SETTINGS = {  # (data, depths, width, epochs) per size; the training steps are cheap, tracing the deep nets is not
    "small": ("digits", (4, 16), 32, 5),  # what tests/test_basics_architectures.py runs
    "default": ("fashion_mnist", (6, 30), 64, 20),
}


@keras.saving.register_keras_serializable(package="basics")
class FullyConnectedBlock(keras.layers.Layer):
    """Two Dense-BN layers of `width` units: plain, relu(BN(W₂ relu(BN(W₁ x)))), or residual,
    relu(x + BN(W₂ relu(BN(W₁ x)))). `zero_gamma` starts the second BN's scale γ at 0 (a residual block is then
    the identity at initialization). The Dense layers have no bias: BN's β replaces it."""

    def __init__(self, width, residual=False, zero_gamma=False, **kwargs):
        super().__init__(**kwargs)
        self.width, self.residual, self.zero_gamma = int(width), bool(residual), bool(zero_gamma)
        self.dense1 = keras.layers.Dense(self.width, use_bias=False, kernel_initializer="he_normal")
        # momentum 0.9 (Keras: 0.99): the running statistics must keep up within a few hundred steps
        self.norm1 = keras.layers.BatchNormalization(momentum=0.9)
        self.dense2 = keras.layers.Dense(self.width, use_bias=False, kernel_initializer="he_normal")
        self.norm2 = keras.layers.BatchNormalization(momentum=0.9, gamma_initializer="zeros" if zero_gamma else "ones")

    def build(self, input_shape):
        if input_shape[-1] != self.width:
            raise ValueError(f"FullyConnectedBlock of width {self.width} got {input_shape[-1]} input features")
        for layer in (self.dense1, self.norm1, self.dense2, self.norm2):
            layer.build(input_shape)  # every layer maps (..., width) to (..., width)

    def call(self, x, training=False):
        h = keras.ops.relu(self.norm1(self.dense1(x), training=training))
        h = self.norm2(self.dense2(h), training=training)
        return keras.ops.relu(x + h if self.residual else h)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "width": self.width, "residual": self.residual, "zero_gamma": self.zero_gamma}


def network(input_dim, depth, *, residual, width=32, zero_gamma=None, num_classes=10, seed=0):
    """`depth` weight layers: Dense-BN-ReLU stem, (depth − 2) / 2 blocks, linear classifier (logits).
    zero_gamma defaults to `residual` (module docstring)."""
    if depth < 2 or depth % 2:
        raise ValueError(f"depth must be an even number ≥ 2 (stem + 2 per block + classifier), got {depth}")
    keras.utils.set_random_seed(seed)  # the same seed gives the plain and the residual net the same weights
    zero_gamma = residual if zero_gamma is None else zero_gamma
    layers = [keras.Input((input_dim,)), keras.layers.Dense(width, use_bias=False, kernel_initializer="he_normal"),
              keras.layers.BatchNormalization(momentum=0.9), keras.layers.ReLU()]
    layers += [FullyConnectedBlock(width, residual=residual, zero_gamma=zero_gamma, name=f"block{i + 1}")
               for i in range((depth - 2) // 2)]
    layers.append(keras.layers.Dense(num_classes, name="logits"))
    return keras.Sequential(layers, name=f"{'residual' if residual else 'plain'}{depth}")


def train(model, x, y, *, epochs, batch_size=64, learning_rate=0.05, momentum=0.9, seed=0):
    """Mini-batch SGD with momentum (v ← μv − η∇L, w ← w + v, as Keras' SGD(η, momentum=μ) does it), every
    step inside one traced loop: the nets are tiny, so Python's per-step overhead and tracing Keras' optimizer
    would cost more than the arithmetic. The batches come from one seeded permutation per epoch:
    every model trained with the same seed sees the same batches in the same order (incomplete last batches
    are dropped). Returns the training-batch cross-entropy of every step (training mode: batch statistics)
    and the global gradient norm of every step."""
    import tensorflow as tf

    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    weights = model.trainable_variables
    velocities = [tf.Variable(tf.zeros_like(w)) for w in weights]
    rng = np.random.default_rng(seed)
    per_epoch = len(x) // batch_size
    order = np.concatenate([rng.permutation(len(x))[:per_epoch * batch_size] for _ in range(epochs)])
    order = tf.constant(order.reshape(-1, batch_size).astype(np.int32))
    x, y = tf.constant(x), tf.constant(y)

    def step(index):
        with tf.GradientTape() as tape:
            loss = loss_fn(tf.gather(y, index), model(tf.gather(x, index), training=True))
        grads = tape.gradient(loss, weights)
        for w, v, g in zip(weights, velocities, grads):
            v.assign(momentum * v - learning_rate * g)
            w.assign_add(v)
        return loss, tf.linalg.global_norm(grads)

    @tf.function
    def loop():
        losses = tf.TensorArray(tf.float32, size=order.shape[0])
        norms = tf.TensorArray(tf.float32, size=order.shape[0])
        for i in tf.range(order.shape[0]):
            loss, norm = step(order[i])
            losses, norms = losses.write(i, loss), norms.write(i, norm)
        return losses.stack(), norms.stack()

    logger = tf.get_logger()  # a new traced loop per model is the plan, not the "retracing" TF warns about
    level = logger.level
    logger.setLevel("ERROR")
    try:
        step_loss, grad_norm = loop()
    finally:
        logger.setLevel(level)
    return {"step_loss": step_loss.numpy(), "grad_norm": grad_norm.numpy(), "steps_per_epoch": per_epoch}


def evaluate(model, x, y):
    """Cross-entropy and accuracy on (x, y) in inference mode (BN with its running statistics)."""
    logits = model(x, training=False).numpy()  # eager: one call, cheaper than tracing predict for every model
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, logits)
    return float(loss), float((logits.argmax(axis=1) == y).mean())


def compare(x, y, *, depths, width, epochs, x_test=None, y_test=None, default_init_deep=False, seed=0):
    """Plain and residual nets of the two `depths` (shallow, deep), trained the same way. Returns per name
    ('plain 6', 'residual 6', ...): step losses, last-epoch mean training-batch loss, training-set loss and
    accuracy (inference mode), test accuracy (when given) and the first step's gradient norm."""
    variants = [(f"{kind} {d}", d, kind == "residual", None) for d in depths for kind in ("plain", "residual")]
    if default_init_deep:
        variants.append((f"residual {depths[-1]}, γ = 1 init", depths[-1], True, False))
    results = {}
    for name, depth, residual, zero_gamma in variants:
        model = network(x.shape[1], depth, residual=residual, width=width, zero_gamma=zero_gamma, seed=seed)
        r = train(model, x, y, epochs=epochs, seed=seed)
        r["last_epoch_loss"] = float(r["step_loss"][-r["steps_per_epoch"]:].mean())
        r["train_loss"], r["train_accuracy"] = evaluate(model, x, y)
        if x_test is not None:
            r["test_accuracy"] = evaluate(model, x_test, y_test)[1]
        r["params"] = model.count_params()
        results[name] = r
    return results


def run(*, folder=None, small=False, seed=0):
    import matplotlib.pyplot as plt

    folder = experiment_folder(folder, "degradation")
    data, depths, width, epochs = SETTINGS["small" if small else "default"]
    if data == "digits":
        (x, y), (x_test, y_test) = digits_arrays()
        data_name = f"8x8 digits ({len(x):,} training images)"
    else:
        arrays = load_arrays("fashion_mnist", limit=5000, seed=seed)
        (x, y), (x_test, y_test) = arrays["train"], arrays["test"]
        mean, std = x.mean(axis=0), x.std(axis=0) + 1e-3  # standardized with the training set's statistics
        x, x_test = (x - mean) / std, (x_test - mean) / std
        data_name = f"Fashion-MNIST ({len(x):,} training images)"
    results = compare(x, y, depths=depths, width=width, epochs=epochs, x_test=x_test, y_test=y_test,
                      default_init_deep=not small, seed=seed)
    print_table(f"MLPs of width {width} with BN on {data_name}: {epochs} epochs of SGD (η 0.05, momentum 0.9, "
                "batch 64), the same batches for every net. Training loss and accuracy on the whole training set "
                "in inference mode",
                ["network", "parameters", "first-step ‖g‖", "last-epoch batch loss", "training loss",
                 "training accuracy", "test accuracy"],
                [[name, r["params"], r["grad_norm"][0], r["last_epoch_loss"], r["train_loss"], r["train_accuracy"],
                  r["test_accuracy"]] for name, r in results.items()])

    fig, ax = plt.subplots(figsize=(8, 4.5))
    colors = {f"plain {depths[0]}": "tab:blue", f"residual {depths[0]}": "tab:cyan",
              f"plain {depths[1]}": "tab:red", f"residual {depths[1]}": "tab:orange"}
    for name, r in results.items():
        # the batch losses jump from step to step: a running mean over a quarter epoch shows the trend
        window = max(1, r["steps_per_epoch"] // 4)
        smooth = np.convolve(r["step_loss"], np.ones(window) / window, mode="valid")
        epochs_done = np.arange(window, len(r["step_loss"]) + 1) / r["steps_per_epoch"]
        ax.plot(epochs_done, smooth, "--" if name.startswith("residual") else "-", color=colors.get(name, "tab:gray"),
                label=f"{name} (final training loss {r['train_loss']:.3f}, accuracy {r['train_accuracy']:.3f})")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training-batch cross-entropy (log scale)")
    ax.set_title(f"Degradation on {data_name}: plain {depths[1]} trains worse than plain {depths[0]}, "
                 f"residual {depths[1]} does not", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    png = save(fig, os.path.join(folder, "training_loss.png"))
    print(f"wrote {png}")
    return {"results": results, "pngs": [png]}
