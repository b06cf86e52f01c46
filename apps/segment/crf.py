"""Experiment: refining a segmentation with a fully connected CRF, mean field in TensorFlow ops.

Krähenbühl & Koltun 2011 ("Efficient inference in fully connected CRFs with Gaussian edge potentials")
put a pairwise term between EVERY two pixels of the image on top of the network's per-pixel output:

  E(x) = Σ_i ψ_u(x_i) + Σ_{i<j} μ(x_i, x_j) k(f_i, f_j)
  ψ_u(x_i = l) = -log P_i(l)                         P = the network's softmax (floored at FLOOR)
  k(f_i, f_j)  = w_a exp(-|p_i - p_j|²/(2θ_α²) - (I_i - I_j)²/(2θ_β²))     appearance (bilateral) kernel:
                                                     nearby pixels of similar intensity want one label
               + w_s exp(-|p_i - p_j|²/(2θ_γ²))      smoothness kernel: removes small isolated regions
  μ(l, l')     = [l ≠ l']                            Potts compatibility: any disagreement costs k

(p = pixel position, I = intensity in [0, 255].) Exact inference is intractable; mean field approximates
the CRF by a product of per-pixel distributions Q_i and iterates, for every pixel i and label l at once,

  Q_i(l) ← softmax_l( -ψ_u(l) - Σ_{l'} μ(l, l') Σ_{j≠i} k(f_i, f_j) Q_j(l') ),   starting from Q = P.

The sums over j are computed EXACTLY, not with the permutohedral lattice K&K use to approximate them:
  - appearance: the full N×N kernel matrix (N = S² pixels) is built once per scene, and each iteration
    multiplies it with the N×K matrix Q (`appearance_rows`, `message`). O(N²): fine for these small
    scenes (96×96: N = 9216, 340 MB of float32, ~2 GFLOPs per iteration), not for megapixel photos;
  - smoothness: a position-only Gaussian is separable (rows × columns), so its full sum over all pixels
    is two S×S matrix products with Q seen as (S, S, K) -- exact, no truncation, O(S³K).
The j = i terms (kernel value 1) are subtracted afterwards.

`run` applies it to a trained FCN's predictions on validation scenes (a quick FCN is trained when no run
folder is given) and reports mIoU before and after; the appearance weight is picked on the first half
of the scenes and the figures are those of the other half.
"""

import dataclasses
import os
import time

import numpy as np
import tensorflow as tf

from apps.segment import app, metrics
from apps.segment import sliding_window as sw
from apps.segment.config import CRFParams
from core import training
from core.errors import UserError

FLOOR = 1e-8            # probabilities are floored here before the log: -log 0 would make a label impossible
BLOCK = 512             # kernel rows built at a time: bounds the (BLOCK, N) temporaries of the distances
DEFAULT_RUN = os.path.join("runs", "segment", "crf")
APPEARANCE_WEIGHTS = (0.0, 1.0, 3.0, 10.0)   # the candidates for w_a, picked on the tuning scenes
SCENES = {False: 32, True: 8}


def positions(size):
    """(N, 2) float32 (row, column) of the pixels of an S×S image, row-major like reshape(N, ...)."""
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    return np.stack([rows.ravel(), cols.ravel()], axis=-1).astype(np.float32)


def appearance_rows(image, params, block=BLOCK):
    """The appearance kernel exp(-|p_i - p_j|²/(2θ_α²) - (I_i - I_j)²/(2θ_β²)) of an (S, S) or (S, S, 1)
    image, every pair (i, j) including i = j (value 1), as a list of row blocks (each (≤ block, N) float32).
    Positions and 0-255 intensities are integers, so their differences and squares are exact in float32:
    each entry is rounded only by the scaling and the exp."""
    intensity = np.asarray(image, np.float32).reshape(-1)
    where = positions(int(round(np.sqrt(intensity.size))))
    rows_of, cols_of, intensity = tf.constant(where[:, 0]), tf.constant(where[:, 1]), tf.constant(intensity)
    blocks = []
    for start in range(0, intensity.shape[0], block):
        i = slice(start, min(start + block, intensity.shape[0]))
        squared_distance = (tf.square(rows_of[i, None] - rows_of[None, :])
                            + tf.square(cols_of[i, None] - cols_of[None, :]))
        squared_difference = tf.square(intensity[i, None] - intensity[None, :])
        blocks.append(tf.exp(-squared_distance / (2 * params.theta_alpha ** 2)
                             - squared_difference / (2 * params.theta_beta ** 2)))
    return blocks


def gaussian_matrix(size, theta):
    """g[a, b] = exp(-(a - b)²/(2θ²)), (S, S): the smoothness kernel is g[r_i, r_j]·g[c_i, c_j]."""
    offsets = np.arange(size, dtype=np.float64)
    return tf.constant(np.exp(-(offsets[:, None] - offsets[None, :]) ** 2 / (2 * theta ** 2)), tf.float32)


def potts(num_classes):
    """μ(l, l') = 1 where l ≠ l', 0 on the diagonal."""
    return tf.constant(1.0 - np.eye(num_classes, dtype=np.float32))


def unary(probabilities):
    """ψ_u = -log P, with P floored at FLOOR."""
    return -tf.math.log(tf.maximum(tf.constant(probabilities, tf.float32), FLOOR))


def message(q, appearance, smoothness, params):
    """Σ_{j≠i} k(f_i, f_j) Q_j(l) for every pixel i and label l; q (N, K). The appearance sum is the dense
    N×N kernel times Q. The smoothness kernel is separable (a Gaussian in rows times one in columns), so
    its exact full sum is two S×S matrix products over Q as (S, S, K): filter the columns, then the rows.
    Both sums include j = i, whose kernel value is exactly 1: subtracting Q_i removes it."""
    size = smoothness.shape[0]
    dense = tf.concat([tf.linalg.matmul(rows, q) for rows in appearance], axis=0)
    grid = tf.reshape(q, (size, size, -1))
    separable = tf.einsum("ab,bck->ack", smoothness, tf.einsum("cd,adk->ack", smoothness, grid))
    return (params.appearance_weight * (dense - q)
            + params.smoothness_weight * (tf.reshape(separable, tf.shape(q)) - q))


def mean_field_step(q, unaries, appearance, smoothness, compatibility, params):
    """One update of every Q_i at once (q and unaries (N, K), compatibility (K, K)):
    pairwise_i(l) = Σ_l' μ(l, l') message_i(l'), then Q_i = softmax(-ψ_u - pairwise_i)."""
    pairwise = tf.linalg.matmul(message(q, appearance, smoothness, params), compatibility, transpose_b=True)
    return tf.nn.softmax(-unaries - pairwise, axis=-1)


def refine(probabilities, image, params=CRFParams(), appearance=None):
    """Mean-field marginals Q (S, S, K) of the dense CRF over one scene's network probabilities (S, S, K).
    `appearance`: the scene's appearance_rows, when already built (they do not depend on the weights)."""
    size, _, num_classes = probabilities.shape
    unaries = tf.reshape(unary(probabilities), (-1, num_classes))
    appearance = appearance_rows(image, params) if appearance is None else appearance
    smoothness = gaussian_matrix(size, params.theta_gamma)
    compatibility = potts(num_classes)
    q = tf.nn.softmax(-unaries, axis=-1)
    for _ in range(params.iterations):
        q = mean_field_step(q, unaries, appearance, smoothness, compatibility, params)
    return q.numpy().reshape(size, size, num_classes)


# --- the experiment ----------------------------------------------------------------------------------------------

def load_run(run_dir):
    """(network, dataset name, class names) of a segment training run folder: its best model."""
    config = training.load_config(run_dir)
    app.check_dataset(config["dataset"])                  # a run of another app names no scene dataset
    net = training.load_trained_model(run_dir, input_shape=config.get("image_shape"))
    return net, config["dataset"], config["class_names"]


def train_quick_fcn(small, seed):
    """(network, dataset name, class names): an FCN trained now at sliding_window's budget (its scenes,
    steps and batch size)."""
    size = sw.SIZES[small]
    spec, names = app.check_dataset(size["dataset"]), app.class_names(size["dataset"])
    print(f"no --from-run: training an FCN for {size['steps']} steps on {size['train_scenes']} scenes of "
          f"{size['dataset']}")
    training.set_seed(seed)
    images, masks = sw.scene_arrays(spec, "train", size["train_scenes"])
    net, _, _ = sw.train_fcn(images, masks, len(names), steps=size["steps"], batch_scenes=size["batch_scenes"],
                             seed=seed)
    return net, size["dataset"], names


def refine_all(probabilities, images, params, weights):
    """{w_a: masks (n, S, S)} of the CRF with each appearance weight, one kernel build per scene; and the
    median milliseconds of one refinement (kernel build + iterations) per scene."""
    masks, times = {w: [] for w in weights}, []
    for p, image in zip(probabilities, images):
        start = time.perf_counter()
        appearance = appearance_rows(image, params)
        for w in weights:
            masks[w].append(refine(p, image, dataclasses.replace(params, appearance_weight=w), appearance).argmax(-1))
            if w == weights[0]:
                times.append(1000 * (time.perf_counter() - start))
    return {w: np.stack(m) for w, m in masks.items()}, float(np.median(times))


def report(masks, predicted, num_classes):
    r = metrics.segmentation_report(metrics.confusion_matrix(masks, predicted, num_classes))
    return {"mean_iou": r["mean_iou"], "pixel_accuracy": r["pixel_accuracy"]}


def run(*, run_dir=DEFAULT_RUN, small=False, seed=0, from_run=None, scenes_count=None, params=CRFParams(),
        weights=APPEARANCE_WEIGHTS):
    """The CRF on a trained model's validation predictions: w_a picked on the first half of the scenes,
    mIoU before/after on the second half; table and crf.png (image / before / after / truth)."""
    count = scenes_count or SCENES[small]
    if count < 2:
        raise UserError(f"--scenes must be at least 2 (half to pick the weight, half to report), got {count}")
    loaded = load_run(from_run) if from_run else None    # a bad run folder fails before anything is written
    out = training.make_output_dir(run_dir)
    net, dataset, names = loaded or train_quick_fcn(small, seed)
    images, truth = sw.scene_arrays(app.check_dataset(dataset), "validation", count)
    probabilities = np.concatenate([np.asarray(net(images[i:i + 16], training=False)) for i in range(0, count, 16)])
    before = probabilities.argmax(-1)
    tune, held = slice(0, count // 2), slice(count // 2, count)

    print(f"\nCRF ({params.iterations} mean-field iterations, θ_α {params.theta_alpha} px, θ_β "
          f"{params.theta_beta}, w_s {params.smoothness_weight}, θ_γ {params.theta_gamma} px) on {count} "
          f"validation scenes of {dataset}")
    tuned, _ = refine_all(probabilities[tune], images[tune], params, weights)
    tuning = {w: report(truth[tune], m, len(names))["mean_iou"] for w, m in tuned.items()}
    best = max(weights, key=lambda w: (tuning[w], -w))
    print(f"picking w_a on scenes 0..{count // 2 - 1}: mIoU without CRF "
          f"{report(truth[tune], before[tune], len(names))['mean_iou']:.4f}; "
          + ", ".join(f"w_a {w:g}: {v:.4f}" for w, v in tuning.items()) + f" -> w_a = {best:g}")
    refined, ms = refine_all(probabilities[held], images[held], params, [best])
    results = {"network": report(truth[held], before[held], len(names)),
               "network + CRF": report(truth[held], refined[best], len(names))}
    changed = float((refined[best] != before[held]).mean())
    print(f"\nheld-out scenes {count // 2}..{count - 1} (w_a = {best:g}; CRF {ms:.0f} ms per scene, "
          f"{100 * changed:.1f} % of the pixels changed):")
    print(f"{'':>14} {'mIoU':>7} {'pixel accuracy':>15}")
    for name, r in results.items():
        print(f"{name:>14} {r['mean_iou']:7.4f} {r['pixel_accuracy']:15.4f}")
    shown = slice(count // 2, count // 2 + min(4, count - count // 2))
    png = sw.mask_panels(images[shown], {"before (network)": before[shown], "after (CRF)": refined[best][:4],
                                         "truth": truth[shown]}, names, os.path.join(out, "crf.png"),
                         title=f"dense CRF, w_a = {best:g}: mIoU {results['network']['mean_iou']:.3f} -> "
                               f"{results['network + CRF']['mean_iou']:.3f} on held-out scenes")
    print(f"wrote {png}")
    return {"tuning": tuning, "appearance_weight": best, "results": results, "changed": changed,
            "ms_per_scene": ms, "pngs": [png]}
