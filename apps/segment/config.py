"""The segment app's settings: one dataclass per thing it runs, the single source of their defaults.

The command line is generated from them (`core.cli.add_config_flags`); `train` saves its `TrainConfig` as the
run's config.json, so `--config runs/segment/unet/config.json` reruns the experiment. No TensorFlow here:
`--help` must be instant.
"""

import dataclasses
from dataclasses import dataclass

from core.cli import option
from core.precision import ComputeOptions

APP = "segment"
MODEL_NAMES = ("dilated", "fcn", "segnet", "unet")   # apps/segment/models.py builds them
LOSS_NAMES = ("crossentropy", "dice", "both")        # apps/segment/losses.py
# Epochs that fit 20 min of training on two idle CPU cores (AMD EPYC, AVX2) with all 8,000 scenes: an epoch
# takes about 2.5 min (fcn), 4 min (segnet) and 5.5 min (unet) there; dilated, outside the results table,
# gets segnet's. The recipe (Adam 4e-3 with cosine decay, batch 16) was chosen on the validation split
# (bench/segment_search.py).
MODEL_EPOCHS = {"fcn": 7, "segnet": 4, "unet": 3, "dilated": 4}


def same_as(config_class, name):
    """A field with the default and help of `config_class`'s field `name`: one source for both."""
    field = next(f for f in dataclasses.fields(config_class) if f.name == name)
    return dataclasses.field(default=field.default, metadata=field.metadata)


@dataclass
class TrainConfig(ComputeOptions):  # --precision, --jit (core/precision.py)
    model: str = option("unet", "architecture", choices=MODEL_NAMES)
    loss: str = option("crossentropy", "pixel-wise loss", choices=LOSS_NAMES)
    dataset: str = option("fashion_mnist_96", "scene config: fashion_mnist_96, mnist_96, fashion_mnist_64_small")
    data_dir: str | None = option(None, "tensorflow-datasets folder of the scenes; none = data/tensorflow_datasets")
    epochs: int | None = option(None, "total epochs; none: the model's budget ("
                                + ", ".join(f"{name} {count}" for name, count in MODEL_EPOCHS.items())
                                + "; about 20 min of training on two idle CPU cores with all 8,000 scenes)", minimum=1)
    batch_size: int = option(16, "batch size per replica", minimum=1)
    learning_rate: float = option(4e-3, "Adam's initial learning rate")
    lr_schedule: str = option("cosine", "cosine: the rate decays to 0 over the run's steps; constant: it stays",
                              choices=("cosine", "constant"))
    limit: int | None = option(None, "training scenes (validation: a quarter as many); none or 0 = all 8,000 "
                                     "(validation: all 1,000)", minimum=0)
    seed: int = option(0, "seed of the weights and the shuffling", minimum=0)
    patience: int | None = option(None, "early stopping after this many epochs without a better validation loss",
                                  minimum=1)


@dataclass
class SlidingWindowConfig:
    small: bool = option(False, "64x64 scenes, 40 steps: seconds, not minutes")
    steps: int | None = option(None, "Adam steps of each model (none: 200, 40 with --small)", minimum=1)
    seed: int = option(0, "seed of the weights and the batches", minimum=0)


@dataclass
class CRFConfig:
    small: bool = option(False, "64x64 scenes, fewer of them: seconds, not minutes")
    scenes: int | None = option(None, "validation scenes, half to pick the appearance weight w_a, half to report "
                                      "(none: 32, 8 with --small)", minimum=2)
    seed: int = option(0, "seed of the quick FCN trained when no --from-run is given", minimum=0)


@dataclass(frozen=True)
class CRFParams:
    """The dense CRF's parameters (apps/segment/crf.py); w_a is picked by the experiment, the rest are flags."""
    appearance_weight: float = option(3.0, "w_a, the appearance kernel's weight")
    theta_alpha: float = option(8.0, "appearance kernel: position scale in pixels")
    theta_beta: float = option(30.0, "appearance kernel: intensity scale, of 255")
    smoothness_weight: float = option(1.0, "w_s, the smoothness kernel's weight", minimum=0.0)
    theta_gamma: float = option(1.5, "smoothness kernel: position scale in pixels")
    iterations: int = option(5, "mean-field iterations", minimum=1)

    def __post_init__(self):
        # A zero scale divides by zero in the kernels: the user's to fix, in one line.
        for name in ("theta_alpha", "theta_beta", "theta_gamma"):
            if not getattr(self, name) > 0:
                from core.errors import UserError

                raise UserError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")


@dataclass
class PreviewConfig:
    dataset: str = same_as(TrainConfig, "dataset")
    split: str = option("train", "the split shown", choices=("train", "validation", "test"))
    count: int = option(8, "scenes shown", minimum=1)
    data_dir: str | None = same_as(TrainConfig, "data_dir")
