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
# Each model's budget on all 8,000 training scenes, chosen on the validation scenes (bench/detect_search.py,
# bench/results/detect_search.jsonl) within the 25 minutes of training the results table allows on two idle
# CPU cores (AMD EPYC, AVX2), where an ssd pass over the scenes takes about 32 s and an rcnn pass about 90 s.
# The mirror images beat as many more passes over the drawn scenes for ssd; rcnn's are not measured yet.
MODEL_BUDGETS = {"ssd": dict(epochs=12, mirror=True), "rcnn": dict(epochs=12, mirror=False)}


@dataclass
class TrainConfig(ComputeOptions):  # --precision, --jit (core/precision.py)
    model: str = option("ssd", "detector (ssd: single shot; rcnn: two-stage, with a mask head)", choices=MODEL_NAMES)
    dataset: str = option("fashion_mnist_96", "tfds scene config: fashion_mnist_96, mnist_96, fashion_mnist_64_small")
    data_dir: str | None = option(None, "tensorflow-datasets folder of the scenes; none = data/tensorflow_datasets")
    epochs: int | None = option(None, "passes over the training scenes (and their mirror images); none: the model's "
                                "budget (" + ", ".join(f"{m} {b['epochs']}" for m, b in MODEL_BUDGETS.items()) + ")",
                                minimum=1)
    mirror: bool | None = option(None, "also train on every training scene flipped left-right; none: the model's "
                                       "budget (" + ", ".join(f"{m} {'yes' if b['mirror'] else 'no'}"
                                                              for m, b in MODEL_BUDGETS.items()) + ")")
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
