"""Distances between two sets of feature vectors (real vs generated samples, in a judge network's feature space).

  frechet_distance   ‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^½) between Gaussians fitted to the two sets
                     (Heusel et al. 2017). Tr((Σ_a Σ_b)^½) is computed as Σ √λ_i of the symmetric
                     positive semi-definite Σ_a^½ Σ_b Σ_a^½ (same eigenvalues as Σ_a Σ_b): no matrix square root
                     of a non-symmetric, possibly singular product, so no "singular matrix" warning and no
                     complex round-off to discard; tiny negative eigenvalues from round-off are clipped to 0.
  precision_recall   improved precision and recall (Kynkäänniemi et al. 2019): each set's manifold is the union
                     of balls around its points with radius the distance to the k-th nearest neighbour in the
                     same set; precision = the share of generated points inside the real manifold (are the
                     samples realistic?), recall = the share of real points inside the generated manifold (do
                     the samples cover the data?). Noise blobs in the rough shape of clothes score a low
                     precision even when their mean and covariance are close.
"""

import numpy as np


def _symmetric_sqrt(matrix):
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(features_a, features_b):
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root_a = _symmetric_sqrt(cov_a)
    middle = root_a @ cov_b @ root_a
    trace_root = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)))
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_root)


def _squared_distances(x, y):
    """‖x_i − y_j‖² for all pairs (float64; clipped at 0 against round-off)."""
    return np.maximum((x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T, 0.0)


def knn_radii(features, k):
    """Squared distance of each point to its k-th nearest other point of the same set."""
    distances = _squared_distances(features, features)
    np.fill_diagonal(distances, np.inf)
    return np.partition(distances, k - 1, axis=1)[:, k - 1]


def _inside(points, centres, radii, chunk=1024):
    """Whether each of `points` lies in at least one ball (centre, squared radius)."""
    return np.concatenate([(_squared_distances(points[i:i + chunk], centres) <= radii[None, :]).any(axis=1)
                           for i in range(0, len(points), chunk)])


def precision_recall(real_features, generated_features, k=3):
    """(precision, recall) of the generated set against the real one; k: the neighbourhood size (the paper: 3)."""
    real = np.asarray(real_features, np.float64)
    generated = np.asarray(generated_features, np.float64)
    if min(len(real), len(generated)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} points in each set")
    precision = _inside(generated, real, knn_radii(real, k)).mean()
    recall = _inside(real, generated, knn_radii(generated, k)).mean()
    return float(precision), float(recall)
