"""Trained models shared by the visualize and style tests (no tests here).

Each pytest worker trains them once: `functools.cache` keeps them for the
worker process, whichever test module asks first.
"""

import functools


def classify_run():
    """A LeNet-5 run folder of apps.classify (conftest's, shared with the classify tests)."""
    from conftest import lenet5_fashion_run

    return lenet5_fashion_run()


@functools.cache
def toy_classifier():
    """The toy square-vs-cross localisation model (accuracy near 1)."""
    from apps.visualize import toy

    return toy.train_toy(count=1500, epochs=3)
