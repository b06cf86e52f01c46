"""core.feature_metrics: the Fréchet distance against its closed form, precision and recall against cases
whose answer is known by construction."""

import numpy as np
import pytest
from scipy import linalg

from core.feature_metrics import frechet_distance, knn_radii, precision_recall


def test_frechet_distance_of_gaussians_matches_the_closed_form_and_scipys_sqrtm():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3)) * [1.0, 2.0, 0.5]
    b = rng.normal(size=(4000, 3)) * [2.0, 1.0, 0.5] + [1.0, 0.0, 0.0]
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    reference = (np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(cov_a + cov_b)
                 - 2 * np.trace(np.real(linalg.sqrtm(cov_a @ cov_b))))
    # float64 eigen-decompositions of 3x3 matrices of magnitude ~4: agreement to ~1e-12 relative
    assert frechet_distance(a, b) == pytest.approx(reference, rel=1e-9)
    # the population value: diagonal covariances, ‖Δμ‖² + Σ (σ_a − σ_b)² = 1 + 1 + 1 + 0
    assert frechet_distance(a, b) == pytest.approx(3.0, abs=0.15)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_of_a_singular_covariance_is_finite_and_without_warnings():
    rng = np.random.default_rng(1)
    flat = rng.normal(size=(50, 84))
    flat[:, 40:] = 0.0  # half the features never fire (dead ReLUs): Σ is singular
    other = flat + rng.normal(scale=0.1, size=flat.shape) * (np.arange(84) < 40)
    with np.errstate(all="raise"):
        distance = frechet_distance(flat, other)
    assert np.isfinite(distance) and distance > 0


def test_precision_and_recall_see_a_collapsed_and_a_displaced_generator():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(600, 2))
    same = rng.normal(size=(600, 2))
    collapsed = rng.normal(size=(600, 2)) * 0.05  # one mode: realistic but covering nothing
    displaced = rng.normal(size=(600, 2)) + 6.0   # off the data
    p, r = precision_recall(real, same)
    assert p > 0.9 and r > 0.9
    p, r = precision_recall(real, collapsed)
    assert p > 0.95 and r < 0.2
    p, r = precision_recall(real, displaced)
    assert p < 0.05 and r < 0.05


def test_knn_radius_is_the_kth_neighbour_distance():
    points = np.array([[0.0], [1.0], [3.0], [7.0]])
    assert knn_radii(points, 1).tolist() == [1.0, 1.0, 4.0, 16.0]
    assert knn_radii(points, 2).tolist() == [9.0, 4.0, 9.0, 36.0]
    with pytest.raises(ValueError, match="more than 3"):
        precision_recall(points[:3], points, k=3)
