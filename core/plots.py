"""PNG figures shared by the apps: learning curves, confusion matrices, image grids."""

import csv
import os

import matplotlib.pyplot as plt  # the backend is the caller's: the CLIs choose Agg (core.errors.run_cli)
import matplotlib.ticker
import numpy as np


def save_figure(fig, path):
    """Write a matplotlib figure as PNG (creating folders) and close it; returns the path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def read_history(csv_path):
    """Columns of a Keras CSVLogger file as float arrays, keyed by name."""
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    # CSVLogger writes "NA" for a metric an epoch did not log (e.g. no validation data).
    return {key: np.array([float(row[key]) if row[key] not in ("", "NA") else np.nan for row in rows])
            for key in rows[0]}


def learning_curves(csv_path, png_path, title="Learning curves"):
    """One panel per metric, training and validation curves over epochs."""
    history = read_history(csv_path)
    metrics = [k for k in history if k not in ("epoch", "learning_rate") and not k.startswith("val_")]
    fig, axes = plt.subplots(1, max(1, len(metrics)), figsize=(5 * max(1, len(metrics)), 3.6), squeeze=False)
    epochs = history.get("epoch", np.arange(len(next(iter(history.values()), [])))) + 1
    for ax, metric in zip(axes[0], metrics):
        ax.plot(epochs, history[metric], "o-", label="train")
        if not np.all(np.isnan(history.get(f"val_{metric}", np.nan))):  # CSVLogger's NA when none
            ax.plot(epochs, history[f"val_{metric}"], "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return save_figure(fig, png_path)


def confusion_matrix(matrix, class_names, png_path, title="Confusion matrix"):
    """Counts with row-normalized colour: the diagonal is per-class recall."""
    matrix = np.asarray(matrix)
    recall = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * n, 0.8 + 0.6 * n))
    ax.imshow(recall, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if recall[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return save_figure(fig, png_path)


def image_grid(images, titles, png_path, columns=8, title=None):
    """A grid of images (N, H, W, C) with a caption under each."""
    images = np.asarray(images)
    rows = int(np.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.9 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, caption in zip(axes.ravel(), images, titles):
        ax.imshow(image.squeeze(), cmap="gray" if image.shape[-1] == 1 else None)
        ax.set_title(caption, fontsize=7)
    if title:
        fig.suptitle(title)
    return save_figure(fig, png_path)
