"""Shared helpers of the basics experiments: output folders, tables, data as arrays."""

import os

import numpy as np

from core import plots, training

RUNS = os.path.join("runs", "basics")  # each experiment's default run folder: runs/basics/<experiment>


def experiment_folder(folder, experiment):
    """The experiment's run folder, `folder` (--run), else runs/basics/<experiment>/; created (a `UserError`
    when it cannot be written)."""
    return training.make_output_dir(folder or os.path.join(RUNS, experiment))


def save(fig, path):
    """Write a matplotlib figure as PNG (the suite's one way of saving figures)."""
    return plots.save_figure(fig, path)


def print_table(title, header, rows):
    """A small fixed-width table on stdout; floats get 4 significant digits."""
    def fmt(value):
        if isinstance(value, (float, np.floating)):
            return f"{value:.4g}"
        return str(value)

    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for row in cells:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))


def load_arrays(name="fashion_mnist", *, limit=None, seed=0, val_fraction=0.1):
    """A `core.data` dataset as flat NumPy arrays with pixels scaled to [0, 1]:
    dict of (x, y) per split, x of shape (n, height*width*channels)."""
    from core import data

    images = data.load_dataset(name, val_fraction=val_fraction, seed=seed, limit=limit)
    arrays = {}
    for split in ("train", "val", "test"):
        xs, ys = [], []
        for x, y in getattr(images, split).batch(4096).as_numpy_iterator():
            xs.append(x.reshape(len(x), -1) / 255.0)
            ys.append(y)
        arrays[split] = (np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.int64))
    arrays["class_names"] = images.class_names
    return arrays


def digits_arrays(*, standardize=True):
    """scikit-learn's 8x8 digits as flat float32 arrays ((x, y), (x_test, y_test)): 1,437 training and 360 test
    images, pixels in [0, 1], or standardized with the training set's per-pixel mean and std (constant pixels
    stay 0). Small enough for experiments that train many models."""
    from core import data

    (x, y), (x_test, y_test) = data.load_digits_arrays(size=8)
    x = x.reshape(len(x), -1).astype(np.float32) / 255.0
    x_test = x_test.reshape(len(x_test), -1).astype(np.float32) / 255.0
    if standardize:
        mean, std = x.mean(axis=0), x.std(axis=0)
        std[std == 0] = 1.0
        x, x_test = (x - mean) / std, (x_test - mean) / std
    return (x, y.astype(np.int64)), (x_test, y_test.astype(np.int64))


def train_loop(model, x, y, *, loss_fn, optimizer, batch_size, epochs, seed=0, evals_per_epoch=1,
               transform_gradients=None):
    """Mini-batch training written out: shuffle every epoch, one optimizer step per batch of `batch_size`
    (batch_size=len(x) is full-batch gradient descent, 1 is per-example SGD).

    `transform_gradients(grads) -> grads` runs inside the step (gradient clipping). The loss on all of
    (x, y) is evaluated `evals_per_epoch` times per epoch (at most once per step) into `curve`, with the
    examples seen and the seconds spent in training steps so far (tracing and evaluation not counted).
    A step whose loss or gradient norm is NaN or ±inf, or an evaluation that is, ends training with
    diverged=True; this is checked on the numbers returned, with np.isfinite, never by trusting an op
    to propagate NaN (oneDNN's ReLU maps NaN to 0).
    Returns dict(step_loss, grad_norm, curve=[(examples, seconds, loss)], diverged)."""
    import time

    import tensorflow as tf

    x, y = tf.constant(x), tf.constant(y)
    n = int(x.shape[0])
    weights = model.trainable_variables

    @tf.function(input_signature=[tf.TensorSpec([None, *x.shape[1:]], x.dtype),
                                  tf.TensorSpec([None, *y.shape[1:]], y.dtype)])
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, weights)
        norm = tf.linalg.global_norm(grads)
        if transform_gradients is not None:
            grads = transform_gradients(grads)
        optimizer.apply_gradients(zip(grads, weights))
        return loss, norm

    def full_loss():  # eager: one call per evaluation, not worth a traced function per run
        return loss_fn(y, model(x, training=False))

    optimizer.build(weights)
    step.get_concrete_function()  # trace now, so that the timings below are of steps, not of tracing
    rng = np.random.default_rng(seed)
    steps_per_epoch = -(-n // batch_size)
    eval_every = max(1, steps_per_epoch // evals_per_epoch)
    step_loss, grad_norm, seconds, seen = [], [], 0.0, 0
    curve = [(0, 0.0, float(full_loss()))]
    diverged = not np.isfinite(curve[0][2])
    for _ in range(epochs if not diverged else 0):
        order = tf.constant(rng.permutation(n))
        for i in range(steps_per_epoch):
            start = time.perf_counter()
            index = order[i * batch_size:(i + 1) * batch_size]
            loss, norm = step(tf.gather(x, index), tf.gather(y, index))
            loss, norm = float(loss), float(norm)  # waits for the step: the time is the step's
            seconds += time.perf_counter() - start
            seen += int(index.shape[0])
            step_loss.append(loss)
            grad_norm.append(norm)
            if not (np.isfinite(loss) and np.isfinite(norm)):
                diverged = True
                break
            if (i + 1) % eval_every == 0 or i + 1 == steps_per_epoch:
                curve.append((seen, seconds, float(full_loss())))
                if not np.isfinite(curve[-1][2]):
                    diverged = True
                    break
        if diverged:
            break
    return {"step_loss": np.array(step_loss), "grad_norm": np.array(grad_norm), "curve": np.array(curve),
            "diverged": diverged}
