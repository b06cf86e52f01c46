"""t-SNE (van der Maaten & Hinton 2008, scikit-learn's TSNE) of the
penultimate-layer features of test images, coloured by class."""

import os

import keras
import numpy as np

from apps.visualize import common
from core.errors import UserError


def penultimate_features(clf, x, batch_size=256):
    """The input of the model's last layer with weights (the features the classifier reads)."""
    model = clf.require_keras("t-SNE of the penultimate features")
    head = next((layer for layer in reversed(model.layers) if layer.weights), None)
    if head is None:
        raise UserError(f"{model.name} has no layer with weights")
    probe = keras.Model(model.inputs[0], head.input)
    features = np.concatenate([np.asarray(probe(x[i:i + batch_size], training=False))
                               for i in range(0, len(x), batch_size)])
    return features.reshape(len(x), -1), head.name


def tsne(clf, *, count=1000, perplexity=30.0, seed=0, max_iter=1000, figures=None):
    """2-D t-SNE points of `count` test images, a scatter PNG, and how well
    the 2-D map keeps classes apart (5-nearest-neighbour accuracy) and
    neighbourhoods (trustworthiness)."""
    from sklearn.manifold import TSNE, trustworthiness
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    if count < 10:
        raise UserError(f"t-SNE needs at least 10 images, got --count {count}")
    x, y = common.test_examples(clf, count)
    features, head = penultimate_features(clf, x)
    perplexity = min(perplexity, (len(x) - 1) / 3)
    # Exact gradients for small sets: faster there than Barnes-Hut's trees, and exact.
    method = "exact" if len(x) <= 500 else "barnes_hut"
    points = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, method=method,
                  max_iter=max_iter).fit_transform(features)
    knn = float(np.mean(cross_val_score(KNeighborsClassifier(5), points, y, cv=5)))
    trust = float(trustworthiness(features, points, n_neighbors=5))

    import matplotlib.pyplot as plt

    from core import plots

    fig, ax = plt.subplots(figsize=(7, 6))
    colours = plt.get_cmap("tab10" if len(clf.class_names) <= 10 else "tab20")
    for c, name in enumerate(clf.class_names):
        chosen = y == c
        if chosen.any():
            ax.scatter(points[chosen, 0], points[chosen, 1], s=6, color=colours(c % colours.N), label=name)
    ax.legend(fontsize=7, markerscale=2, loc="best")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{clf.name}: t-SNE of the {features.shape[1]}-d input of '{head}', {len(x)} test images\n"
                 f"perplexity {perplexity:.0f}; 5-NN accuracy in 2-D {knn:.2f}, trustworthiness {trust:.2f}",
                 fontsize=9)
    png = plots.save_figure(fig, os.path.join(common.figures_dir(figures, clf), "tsne.png"))
    print(f"t-SNE of {len(x)} images: 5-NN accuracy in the 2-D map {knn:.3f}, trustworthiness {trust:.3f}")
    return {"png": png, "points": points, "labels": y, "knn_accuracy": knn, "trustworthiness": trust}
