"""The detect app's settings: one dataclass per thing it runs, the single source of their defaults.

The command line is generated from them (`core.cli.add_config_flags`); `train` saves its `TrainConfig` as the
run's config.json, so `--config runs/detect/ssd/config.json` reruns the experiment. No TensorFlow here:
`--help` must be instant.
"""

from dataclasses import dataclass

from core.cli import option
from core.precision import ComputeOptions

APP = "detect"
MODEL_NAMES = ("ssd", "rcnn")   # apps/detect/models.py builds them


@dataclass
class TrainConfig(ComputeOptions):  # --precision, --jit (core/precision.py)
    model: str = option("ssd", "detector (ssd: single shot; rcnn: two-stage, with a mask head)", choices=MODEL_NAMES)
    dataset: str = option("fashion_mnist_96", "tfds scene config: fashion_mnist_96, mnist_96, fashion_mnist_64_small")
    data_dir: str | None = option(None, "tensorflow-datasets folder of the scenes; none = data/tensorflow_datasets")
    # On all 8,000 training scenes; the figures in docs/detect.md use shorter budgets via --limit.
    epochs: int = option(6, "total epochs", minimum=1)
    batch_size: int = option(32, "batch size per replica", minimum=1)
    learning_rate: float = option(2e-3, "Adam's learning rate (gradients clipped at global norm 10)")
    limit: int | None = option(None, "use at most this many scenes per split (none: all)", minimum=1)
    seed: int = option(0, "seed of the weights and the shuffling", minimum=0)


@dataclass
class ExperimentConfig:
    small: bool = option(False, "a quick run: fewer scenes and epochs (2-4 min on a busy 2-core CPU)")
    seed: int = option(0, "seed of the scenes and the training", minimum=0)


@dataclass
class LocalizeConfig(ExperimentConfig):
    box_weight: float = option(1.0, "lambda in cross-entropy + lambda * box loss", minimum=0.0)
