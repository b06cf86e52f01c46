"""The training settings of the classify app: one dataclass, the single source of their defaults.

The command line makes one flag per field (core.cli.add_config_flags); `train` starts from these defaults,
then the chosen model's budget (budgets.py: a few overrides per model), then `--config FILE`, then the flags
typed. `app.train(config)` and `app.compile_model(net, config)` read the same object, and the run's
config.json holds every field, so `train --config runs/classify/vgg/config.json` reruns the experiment.

No TensorFlow import here: the CLI reads this module before parsing arguments.
"""

from dataclasses import dataclass

from apps.classify.budgets import DEFAULT_MODEL
from core.cli import option
from core.precision import ComputeOptions

MODEL_NAMES = ("mlp", "lenet5", "alexnet", "vgg", "nin", "googlenet", "resnet", "resnet_bottleneck",
               "resnet_preact", "wide_resnet", "resnext", "densenet", "se_resnet", "resnet_sd", "mobilenet",
               "inception_v3")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "amsgrad")
SCHEDULES = ("constant", "step", "cosine")
INITIALIZERS = ("default", "xavier", "he")
AUGMENTATIONS = ("flip", "crop", "randaugment", "mixup", "cutmix")
RESAMPLING = ("none", "over", "under")
CLASS_WEIGHTS = ("none", "balanced")

# The settings that pick the data (and its split), not the training recipe: `compare` shares them between
# its two setups.
DATA_KEYS = ("dataset", "limit", "val_fraction", "seed")


@dataclass
class FitConfig:
    """What every training of this app sets: `train`'s and `transfer`'s shared settings."""

    epochs: int = option(5, "total epochs", minimum=1)
    batch_size: int = option(128, "batch size per replica", minimum=1)
    learning_rate: float = option(1e-3, "base learning rate", minimum=0.0)
    optimizer: str = option("adam", "optimizer", choices=OPTIMIZERS)
    seed: int = option(0, "data split, initial weights and shuffling", minimum=0)
    limit: int | None = option(None, "use at most this many examples per split", minimum=1)
    val_fraction: float = option(0.1, "share of the training data held out for validation", minimum=0.0,
                                 maximum=0.9)
    patience: int | None = option(None, "early stopping: stop after this many epochs without a lower validation "
                                        "loss and keep the best weights", minimum=1)


@dataclass
class TrainConfig(ComputeOptions, FitConfig):
    # ComputeOptions: --precision and --jit (core/precision.py), after FitConfig's fields in the help.
    # `transfer` does not take them: its backbone keeps the dtype policy of the run it was trained in.
    model: str = option(DEFAULT_MODEL, "architecture", choices=MODEL_NAMES)
    dataset: str = option("fashion_mnist", "fashion_mnist, mnist5k, digits, or tfds:NAME")
    # The training tricks (recipes.py).
    momentum: float = option(0.9, "momentum of momentum/nesterov", minimum=0.0)
    lr_schedule: str = option("constant", "learning-rate schedule", choices=SCHEDULES)
    warmup_epochs: float = option(0.0, "linear learning-rate warm-up length in epochs", minimum=0.0)
    lr_step_epochs: float = option(2.0, "step schedule: epochs between drops", minimum=0.0)
    lr_gamma: float = option(0.1, "step schedule: factor at each drop", minimum=0.0)
    init: str = option("default", "kernel initializer", choices=INITIALIZERS)
    l1: float = option(0.0, "L1 penalty on every kernel, added to the loss", minimum=0.0)
    l2: float = option(0.0, "L2 penalty on every kernel, added to the loss", minimum=0.0)
    dropout: float | None = option(None, "dropout rate before the classifier; none keeps the model's own")
    dropconnect: float | None = option(None, "add a DropConnect hidden layer with this rate before the classifier")
    batchnorm: bool | None = option(None, "batch norm on/off; none keeps the model's own")
    width: float | None = option(None, "multiply every channel count; none keeps the model's own")
    label_smoothing: float = option(0.0, "epsilon of label smoothing")
    augment: str = option("", "comma-separated keras-cv augmentations: " + ", ".join(AUGMENTATIONS))
    imbalance: float | None = option(None, "make the training set imbalanced: class c keeps a share "
                                           "RATIO**(c/(K-1))")
    resample: str = option("none", "re-sample the training set (over- or under-sampling)", choices=RESAMPLING)
    class_weight: str = option("none", "class weights (balanced: w_c = N / (K n_c))", choices=CLASS_WEIGHTS)
    aux_weight: float = option(0.3, "weight of auxiliary-classifier losses (GoogLeNet, Inception v3)", minimum=0.0)
    coarse_weight: float | None = option(None, "multi-task: add a coarse-category head (Fashion-MNIST: top, bottom, "
                                               "footwear, bag) whose loss counts with this weight", minimum=0.0)


# The settings of one training setup (what `compare` varies), as opposed to the data it trains on.
RECIPE_KEYS = tuple(name for name in TrainConfig.__dataclass_fields__ if name not in DATA_KEYS)


@dataclass
class SearchConfig:
    """`search`'s settings: which recipes, for which model, over how many seeds. Every other setting of a trial
    comes from the model's budget and the recipe (apps/classify/search.py)."""

    space: str | None = option(None, 'a JSON list of {"name": ..., "overrides": {training settings}}; none: the '
                                     "default space of apps/classify/search.py")
    model: str = option(DEFAULT_MODEL, "the architecture whose recipes are compared", choices=MODEL_NAMES)
    seeds: int = option(3, "K: each recipe trains with the seeds SEED..SEED+K-1", minimum=1)
    epochs: int | None = option(None, "epochs of every trial; none: the model's budget (or the recipe's)", minimum=1)
    limit: int | None = option(None, "use at most this many examples per split (a quick search)", minimum=1)
    seed: int = option(0, "the validation split, the same for every trial, and the first training seed", minimum=0)


TRANSFER_MODES = ("feature", "finetune")


@dataclass
class TransferConfig(FitConfig):
    backbone: str | None = option(None, "run folder of the trained source model; required")
    dataset: str = option("mnist5k", "target dataset")
    mode: str = option("feature", "feature (frozen feature extractor + new head) or finetune", choices=TRANSFER_MODES)
    fine_tune_layers: int | None = option(None, "finetune only the top N backbone layers with weights; none: all",
                                          minimum=1)
