"""Shared helpers of the basics experiments: output folders, tables, data as arrays."""

import os

import numpy as np

from core import plots, training

DEFAULT_OUT = os.path.join("runs", "basics")


def out_dir(out, experiment):
    """`<out>/<experiment>/`, created (a `UserError` when it cannot be written)."""
    return training.make_output_dir(os.path.join(out or DEFAULT_OUT, experiment))


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
