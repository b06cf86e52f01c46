"""Trained models shared by the visualize and style tests (no tests here).

Each pytest worker trains them once: `functools.cache` keeps them for the
worker process, whichever test module asks first.
"""

import functools
import os
import tempfile


@functools.cache
def classify_run():
    """A LeNet-5 run folder of apps.classify: 2 epochs on 2,000 Fashion-MNIST images."""
    from apps.classify import app

    run_dir = os.path.join(tempfile.mkdtemp(prefix="visualize-lenet5-"), "lenet5")
    app.train(model="lenet5", dataset="fashion_mnist", epochs=2, limit=2000, run=run_dir)
    return run_dir


@functools.cache
def toy_classifier():
    """The toy square-vs-cross localisation model (accuracy near 1)."""
    from apps.visualize import toy

    return toy.train_toy(count=1500, epochs=3)
