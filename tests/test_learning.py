"""Learning, proven on a tiny budget: each model beats its baseline by a clear margin, with the app's own code.

  GANs (the generative app's quality-table variants: gan, minimax, least squares, feature matching, minibatch
  discrimination, DCGAN, cGAN, WGAN-GP)
      built from the app's registry with the app's options (`TrainConfig` -> `MODELS`), compiled by the model's
      own `compile_for_run`, fed by its own `fit_data` (real Fashion-MNIST training images) and trained by
      `fit` for a few hundred steps. The Fréchet distance of its samples (drawn as the app draws them,
      `figures.generate`) to real validation images, in the penultimate features of the suite's judge (a
      LeNet-5 of apps.classify, the session's `trained_run`, the judge's architecture), computed with the
      function the app's evaluate uses (`core.feature_metrics.frechet_distance`), must fall to at most
      `FD_RATIO` of the untrained generator's. A generator that is not updated, or one trained at a learning
      rate of 0, keeps its distance (checked by breaking the code on purpose) and fails.
  Quote classifiers (apps.sequence textclass: lstm, bigru, transformer; the bag model is
  tests/test_sequence_textclass.py's)
      trained by `textclass.train` on all the training quotes for 3 short epochs and scored by
      `textclass.evaluate` on the test split: accuracy at least 0.1 above the majority class's (0.367,
      "computers"). A classifier trained at a learning rate of 0 stays near or below it and fails.
"""

import numpy as np
import pytest

from apps.generative import figures, quality
from apps.generative.common import arrays
from apps.generative.config import TrainConfig, with_model_defaults
from apps.generative.models import MODELS
from core import data, training
from core.cli import config_dict

LIMIT = 2000  # training images (and validation images: the real reference)
NUM_SAMPLES = 500  # generated samples and real validation images in each Fréchet distance
FD_RATIO = 0.7  # the trained generator's distance must be at most this share of the untrained one's

_MLP = dict(steps=200, batch_size=64, learning_rate=1e-3)
_CONV = dict(steps=100, batch_size=16, learning_rate=2e-3)
# name (the quality table's row): (model, options, budget). Measured FDs (seeds 0 and 1) in the report's table.
GAN_VARIANTS = {
    "gan": ("gan", {}, _MLP),
    "gan_minimax": ("gan", {"gan_loss": "minimax"}, _MLP),
    "gan_least_squares": ("gan", {"gan_loss": "least_squares"}, _MLP),
    "gan_feature_matching": ("gan", {"feature_matching": True}, _MLP),
    "gan_minibatch_discrimination": ("gan", {"minibatch_discrimination": True}, dict(_MLP, steps=300)),
    "dcgan": ("dcgan", {}, dict(_CONV, steps=60)),  # 168.4 -> 73.9 at 50 steps, 52.0 at 100
    "cgan": ("cgan", {}, _CONV),
    "wgan_gp": ("wgan_gp", {"critic_steps": 2}, dict(steps=100, batch_size=16, learning_rate=1e-3)),
}


@pytest.fixture(scope="module")
def judge(trained_run):
    """The suite's judge: a LeNet-5 of apps.classify (what `quality.train_judge` trains), as `quality.Judge`."""
    return quality.Judge(training.load_trained_model(trained_run))


@pytest.fixture(scope="module")
def real_features(judge):
    """The judge's features of NUM_SAMPLES real validation images (never trained on, by the GANs or the judge)."""
    images = data.load_dataset("fashion_mnist", limit=LIMIT)
    real, _ = arrays(images.val, NUM_SAMPLES)
    return judge(real)[0]


def train_gan(name, seed, judge, real_features):
    """(Fréchet distance of the untrained generator's samples, after training) for the quality table's row `name`."""
    model, options, budget = GAN_VARIANTS[name]
    config = with_model_defaults(TrainConfig(model=model, limit=LIMIT, batch_size=budget["batch_size"],
                                             learning_rate=budget["learning_rate"], seed=seed, **options))
    training.set_seed(seed)
    images = data.load_dataset(config.dataset, val_fraction=config.val_fraction, seed=seed, limit=LIMIT)
    net = MODELS.get(model)(images.image_shape, images.num_classes, config_dict(config))
    net.compile_for_run(config.learning_rate)
    batches, _, _ = net.fit_data(images, config, config.batch_size)
    recorded = dict(config_dict(config), class_names=list(images.class_names))

    def distance():
        samples, _ = figures.generate(net, recorded, NUM_SAMPLES, seed=3)  # as the app's evaluate draws them
        return quality.frechet_distance(real_features, judge(samples)[0])

    untrained = distance()
    net.fit(batches.repeat(), epochs=1, steps_per_epoch=budget["steps"], verbose=0)
    return untrained, distance()


# Minibatch discrimination's distance stalls near the untrained one, then drops at a step that moves with the
# seed and the CPU's kernels (seed 0 at 300 steps: 21.1 with oneDNN off, 138.7 in one run with it on): a fixed
# small budget cannot tell it learns on every machine, so it runs with the slow tests until its budget is measured.
UNSTABLE_IN_BUDGET = {"gan_minibatch_discrimination"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in UNSTABLE_IN_BUDGET else n
                                  for n in GAN_VARIANTS])
def test_every_gan_lowers_its_frechet_distance(name, judge, real_features):
    untrained, trained = train_gan(name, 0, judge, real_features)
    assert np.isfinite(trained) and trained <= FD_RATIO * untrained, (name, untrained, trained)


@pytest.mark.parametrize("name", ["lstm", "bigru", "transformer"])
def test_recurrent_and_transformer_classifiers_beat_the_majority_class(name, tmp_path):
    from apps.sequence import textclass
    from apps.sequence.config import TextClassConfig

    out = str(tmp_path / name)
    # 4,000 words (of 14,747) and 24 words per quote (the median quote has 21): 3 epochs of 45 steps in seconds.
    textclass.train(TextClassConfig(model=name, epochs=3, batch_size=64, learning_rate=5e-3, sequence_length=24,
                                    max_tokens=4000, seed=0), run=out)
    report = textclass.evaluate(out=out)
    assert report["majority_class"] == "computers"
    assert report["accuracy"] > report["majority_accuracy"] + 0.1, (name, report["accuracy"],
                                                                    report["majority_accuracy"])
