"""Experiment 3: optimizers written from their update equations.

Each class below is a `keras.optimizers.Optimizer` whose `update_step` is the
textbook rule for one parameter θ with gradient g at step t (η the learning rate):

  SGD        θ ← θ - ηg
  Momentum   v ← μv - ηg;               θ ← θ + v
  Nesterov   v ← μv - ηg;               θ ← θ + μv - ηg   (look-ahead, in Sutskever's reformulation)
  AdaGrad    r ← r + g²;                θ ← θ - ηg / √(r + ε)         (r starts at 0.1, as in Keras)
  RMSProp    r ← ρr + (1-ρ)g²;          θ ← θ - ηg / √(r + ε)
  Adadelta   r ← ρr + (1-ρ)g²;  Δ = -√(s + ε)/√(r + ε) · g;  s ← ρs + (1-ρ)Δ²;  θ ← θ + ηΔ
  Adam       m ← β₁m + (1-β₁)g;  v ← β₂v + (1-β₂)g²;  m̂ = m/(1-β₁ᵗ);  v̂ = v/(1-β₂ᵗ)
             θ ← θ - η m̂ / (√v̂ + ε̂),   ε̂ = ε/√(1-β₂ᵗ)    (Kingma & Ba's ε-hat form, which Keras uses)
  AMSGrad    Adam with v replaced by v_max ← max(v_max, v) (Reddi et al.; bias-corrected as in Keras)

`check_against_keras` runs each one and Keras' built-in counterpart from the
same start on the same loss and compares the parameters after every step.
"""

import os

import keras
import numpy as np
from keras import ops

from apps.basics.common import experiment_folder, load_arrays, print_table, save


class _Scratch(keras.optimizers.Optimizer):
    """Per-variable slots by name; subclasses list them in SLOTS."""

    SLOTS = ()
    SLOT_INIT = {}

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        for slot in self.SLOTS:
            setattr(self, "_" + slot, self.add_optimizer_variables(
                var_list, slot, initializer=keras.initializers.Constant(self.SLOT_INIT.get(slot, 0.0))))

    def slot(self, name, variable):
        return getattr(self, "_" + name)[self._get_variable_index(variable)]

    def step(self, variable):
        """t = 1, 2, ... of the update being computed, as the variable's dtype."""
        return ops.cast(self.iterations + 1, variable.dtype)


class ScratchSGD(_Scratch):
    def __init__(self, learning_rate=0.01, name="scratch_sgd", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)

    def update_step(self, g, theta, learning_rate):
        self.assign_sub(theta, ops.cast(learning_rate, theta.dtype) * g)


class ScratchMomentum(_Scratch):
    SLOTS = ("velocity",)
    NESTEROV = False

    def __init__(self, learning_rate=0.01, momentum=0.9, name="scratch_momentum", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.momentum = momentum

    def update_step(self, g, theta, learning_rate):
        lr, mu = ops.cast(learning_rate, theta.dtype), ops.cast(self.momentum, theta.dtype)
        v = self.slot("velocity", theta)
        self.assign(v, mu * v - lr * g)
        self.assign_add(theta, mu * v - lr * g if self.NESTEROV else v)


class ScratchNesterov(ScratchMomentum):
    NESTEROV = True

    def __init__(self, learning_rate=0.01, momentum=0.9, name="scratch_nesterov", **kwargs):
        super().__init__(learning_rate=learning_rate, momentum=momentum, name=name, **kwargs)


class ScratchAdaGrad(_Scratch):
    SLOTS = ("accumulator",)
    SLOT_INIT = {"accumulator": 0.1}

    def __init__(self, learning_rate=0.001, epsilon=1e-7, name="scratch_adagrad", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.epsilon = epsilon

    def update_step(self, g, theta, learning_rate):
        r = self.slot("accumulator", theta)
        self.assign(r, r + g * g)
        self.assign_sub(theta, ops.cast(learning_rate, theta.dtype) * g / ops.sqrt(r + self.epsilon))


class ScratchRMSProp(_Scratch):
    SLOTS = ("mean_square",)

    def __init__(self, learning_rate=0.001, rho=0.9, epsilon=1e-7, name="scratch_rmsprop", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.rho, self.epsilon = rho, epsilon

    def update_step(self, g, theta, learning_rate):
        r = self.slot("mean_square", theta)
        self.assign(r, self.rho * r + (1 - self.rho) * g * g)
        self.assign_sub(theta, ops.cast(learning_rate, theta.dtype) * g / ops.sqrt(r + self.epsilon))


class ScratchAdadelta(_Scratch):
    SLOTS = ("mean_square_gradient", "mean_square_delta")

    def __init__(self, learning_rate=0.001, rho=0.95, epsilon=1e-7, name="scratch_adadelta", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.rho, self.epsilon = rho, epsilon

    def update_step(self, g, theta, learning_rate):
        r, s = self.slot("mean_square_gradient", theta), self.slot("mean_square_delta", theta)
        self.assign(r, self.rho * r + (1 - self.rho) * g * g)
        delta = -ops.sqrt(s + self.epsilon) / ops.sqrt(r + self.epsilon) * g
        self.assign(s, self.rho * s + (1 - self.rho) * delta * delta)
        self.assign_add(theta, ops.cast(learning_rate, theta.dtype) * delta)


class ScratchAdam(_Scratch):
    SLOTS = ("m", "v")
    AMSGRAD = False

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, name="scratch_adam", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

    def update_step(self, g, theta, learning_rate):
        t = self.step(theta)
        m, v = self.slot("m", theta), self.slot("v", theta)
        self.assign(m, self.beta_1 * m + (1 - self.beta_1) * g)
        self.assign(v, self.beta_2 * v + (1 - self.beta_2) * g * g)
        if self.AMSGRAD:
            v_max = self.slot("v_max", theta)
            self.assign(v_max, ops.maximum(v_max, v))
            v = v_max
        correction_2 = 1 - ops.power(ops.cast(self.beta_2, theta.dtype), t)
        m_hat = m / (1 - ops.power(ops.cast(self.beta_1, theta.dtype), t))
        v_hat = v / correction_2
        epsilon_hat = self.epsilon / ops.sqrt(correction_2)
        self.assign_sub(theta, ops.cast(learning_rate, theta.dtype) * m_hat / (ops.sqrt(v_hat) + epsilon_hat))


class ScratchAMSGrad(ScratchAdam):
    SLOTS = ("m", "v", "v_max")
    AMSGRAD = True

    def __init__(self, learning_rate=0.001, name="scratch_amsgrad", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)


# name: (scratch class, Keras built-in factory, learning rate for the 2-D surfaces, for Fashion-MNIST)
OPTIMIZERS = {
    "sgd": (ScratchSGD, lambda lr: keras.optimizers.SGD(lr), 1e-3, 0.05),
    "momentum": (ScratchMomentum, lambda lr: keras.optimizers.SGD(lr, momentum=0.9), 2e-4, 0.01),
    "nesterov": (ScratchNesterov, lambda lr: keras.optimizers.SGD(lr, momentum=0.9, nesterov=True), 2e-4, 0.01),
    "adagrad": (ScratchAdaGrad, lambda lr: keras.optimizers.Adagrad(lr), 0.5, 0.05),
    "rmsprop": (ScratchRMSProp, lambda lr: keras.optimizers.RMSprop(lr), 0.01, 1e-3),
    "adadelta": (ScratchAdadelta, lambda lr: keras.optimizers.Adadelta(lr), 10.0, 1.0),
    "adam": (ScratchAdam, lambda lr: keras.optimizers.Adam(lr), 0.05, 1e-3),
    "amsgrad": (ScratchAMSGrad, lambda lr: keras.optimizers.Adam(lr, amsgrad=True), 0.05, 1e-3),
}


def check_against_keras(name, *, steps=25, learning_rate=None, seed=0):
    """Run the scratch optimizer and Keras' own from the same weights on the same (non-quadratic) loss;
    returns the max |difference| of the parameters after each step and the largest parameter change."""
    import tensorflow as tf

    scratch_cls, builtin, _, _ = OPTIMIZERS[name]
    lr = learning_rate or {"adadelta": 1.0, "adagrad": 0.1}.get(name, 0.01)
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.normal(size=(16, 4)), tf.float32)
    target = tf.constant(rng.normal(size=(16, 3)), tf.float32)
    init = [rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(3,)).astype(np.float32)]

    def trajectory(optimizer):
        params = [tf.Variable(p) for p in init]
        path = []
        for _ in range(steps):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean((tf.tanh(x @ params[0] + params[1]) - target) ** 2) + \
                    0.01 * tf.reduce_sum(params[0] ** 4)
            optimizer.apply_gradients(zip(tape.gradient(loss, params), params))
            path.append(np.concatenate([p.numpy().ravel() for p in params]))
        return np.array(path)

    ours, theirs = trajectory(scratch_cls(lr)), trajectory(builtin(lr))
    start = np.concatenate([p.ravel() for p in init])
    return {"max_abs_diff_per_step": np.abs(ours - theirs).max(axis=1),
            "max_param_change": float(np.abs(theirs - start).max()), "scratch": ours, "keras": theirs}


def rosenbrock(p):
    return (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2


def beale(p):
    x, y = p[0], p[1]
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y ** 2) ** 2 + (2.625 - x + x * y ** 3) ** 2


SURFACES = {  # name: (function, start, minimum, plot window, learning-rate scale)
    "rosenbrock": (rosenbrock, (-1.5, 2.0), (1.0, 1.0), ((-2, 2), (-1, 3)), 1.0),
    "beale": (beale, (0.7, 1.4), (3.0, 0.5), ((-2, 4), (-1.5, 2.5)), 1.0),
}


def surface_trajectory(name, surface, *, steps=2000):
    """The scratch optimizer's path on a 2-D surface (float64)."""
    import tensorflow as tf

    function, start, _, _, scale = SURFACES[surface]
    scratch_cls, _, lr, _ = OPTIMIZERS[name]
    point = tf.Variable(np.array(start, np.float64))
    optimizer = scratch_cls(lr * scale)

    @tf.function
    def descend():
        path = tf.TensorArray(tf.float64, size=steps + 1)
        values = tf.TensorArray(tf.float64, size=steps)
        path = path.write(0, point)
        for i in tf.range(steps):
            with tf.GradientTape() as tape:
                value = function(point)
            grad = tf.clip_by_norm(tape.gradient(value, point), 1e3)  # keeps SGD off Rosenbrock's steep walls
            optimizer.apply_gradients([(grad, point)])
            values = values.write(i, value)
            path = path.write(i + 1, point)
        return path.stack(), values.stack()

    path, values = descend()
    return path.numpy(), values.numpy()


def fashion_curves(names, *, limit=6000, epochs=3, batch_size=64, seed=0):
    """Per-step training loss and final test accuracy of a 784-128-10 MLP per scratch optimizer."""
    import tensorflow as tf

    arrays = load_arrays("fashion_mnist", limit=limit, seed=seed)
    (x, y), (x_test, y_test) = arrays["train"], arrays["test"]
    results = {}
    for name in names:
        keras.utils.set_random_seed(seed)
        model = keras.Sequential([keras.Input((x.shape[1],)), keras.layers.Dense(128, activation="relu"),
                                  keras.layers.Dense(10)])
        scratch_cls, _, _, lr = OPTIMIZERS[name]
        optimizer = scratch_cls(lr)
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

        @tf.function
        def step(xb, yb):
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, model(xb, training=True))
            optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
            return loss

        losses = []
        rng = np.random.default_rng(seed)
        for _ in range(epochs):
            order = rng.permutation(len(x))
            for start in range(0, len(x) - batch_size + 1, batch_size):
                batch = order[start:start + batch_size]
                losses.append(float(step(x[batch], y[batch])))
        accuracy = float((model.predict(x_test, verbose=0, batch_size=1024).argmax(1) == y_test).mean())
        results[name] = {"losses": np.array(losses), "test_accuracy": accuracy, "learning_rate": lr}
    return results


def run(*, folder=None, small=False, seed=0):
    import matplotlib.pyplot as plt

    folder = experiment_folder(folder, "optimizers")
    names = list(OPTIMIZERS)
    checks = {name: check_against_keras(name, steps=10 if small else 50, seed=seed) for name in names}
    steps = 300 if small else 3000
    paths = {(n, s): surface_trajectory(n, s, steps=steps) for s in SURFACES for n in names}
    curves = fashion_curves(names, limit=2000 if small else 10000, epochs=1 if small else 3, seed=seed)

    rows = []
    for name in names:
        row = [name, len(checks[name]["max_abs_diff_per_step"]), float(checks[name]["max_abs_diff_per_step"].max()),
               checks[name]["max_param_change"]]
        for surface in SURFACES:
            path, values = paths[(name, surface)]
            row.append(float(np.linalg.norm(path[-1] - SURFACES[surface][2])))
        row += [curves[name]["learning_rate"], float(curves[name]["losses"][-20:].mean()),
                curves[name]["test_accuracy"]]
        rows.append(row)
    print_table(f"scratch optimizers: vs Keras, {steps} steps on 2-D surfaces, Fashion-MNIST MLP",
                ["optimizer", "steps", "max|ours-keras|", "max|Δθ|", "dist. to min (Rosenbrock)",
                 "dist. to min (Beale)", "lr (F-MNIST)", "final loss", "test acc"], rows)

    pngs = []
    fig, axes = plt.subplots(1, len(SURFACES), figsize=(7 * len(SURFACES), 5.6))
    for ax, (surface, (function, start, minimum, (xr, yr), _)) in zip(axes, SURFACES.items()):
        gx, gy = np.meshgrid(np.linspace(*xr, 300), np.linspace(*yr, 300))
        z = function(np.stack([gx, gy]))
        ax.contour(gx, gy, np.log1p(z), levels=30, cmap="Greys", linewidths=0.6)
        for name in names:
            path = paths[(name, surface)][0]
            ax.plot(path[:, 0], path[:, 1], "-", lw=1.3, label=name)
        ax.plot(*start, "ko")
        ax.plot(*minimum, "r*", ms=14)
        ax.set_xlim(*xr)
        ax.set_ylim(*yr)
        ax.set_title(f"{surface}: {steps} steps from {start} (★ minimum)", fontsize=10)
        ax.legend(fontsize=7, loc="lower right")
    pngs.append(save(fig, os.path.join(folder, "trajectories.png")))

    fig, axes = plt.subplots(1, 2, figsize=(14, 4.5))
    for name in names:
        losses = curves[name]["losses"]
        smooth = np.convolve(losses, np.ones(10) / 10, mode="valid")
        axes[0].plot(smooth, label=f"{name} (lr {curves[name]['learning_rate']:g}, "
                                   f"test acc {curves[name]['test_accuracy']:.3f})")
        axes[1].semilogy(checks[name]["max_abs_diff_per_step"] + 1e-12, "o-", ms=3, label=name)
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("training loss (10-step mean)")
    axes[0].set_title("Fashion-MNIST, MLP 784-128-10, batch 64", fontsize=10)
    axes[0].legend(fontsize=7)
    axes[0].grid(alpha=0.3)
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("max |θ_scratch - θ_keras|")
    axes[1].set_title("step-by-step agreement with Keras' optimizers (float32)", fontsize=10)
    axes[1].legend(fontsize=7)
    axes[1].grid(alpha=0.3)
    pngs.append(save(fig, os.path.join(folder, "fashion_mnist_and_checks.png")))
    for png in pngs:
        print(f"wrote {png}")
    return {"checks": checks, "paths": paths, "curves": curves, "pngs": pngs}
