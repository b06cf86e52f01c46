"""The training settings of each task of apps.sequence: the single source of their defaults (the flags of
`train --task NAME` are made from these, `core.cli.add_config_flags`); each inherits `--precision` and `--jit`
(`core.precision.ComputeOptions`)."""

from dataclasses import dataclass

from core.cli import option
from core.precision import ComputeOptions

CELLS = ("elman", "lstm", "gru", "keras-elman", "keras-lstm", "keras-gru")  # models.RNNS, without importing Keras
CLASSIFIERS = ("bag", "lstm", "bigru", "transformer")  # models.CLASSIFIERS
SEQ2SEQ = ("bahdanau", "transformer")  # seq2seq.SEQ2SEQ


@dataclass
class CharLMConfig(ComputeOptions):
    cell: str = option("lstm", "recurrent cell (the suite's, or Keras' built-in)", choices=CELLS)
    units: int = option(256, "units per RNN layer", minimum=1)
    num_layers: int = option(2, "stacked RNN layers", minimum=1, flag="--layers")
    embed_dim: int = option(64, "character embedding size", minimum=1)
    dropout: float = option(0.0, "dropout between the RNN layers", minimum=0.0, maximum=0.95)
    epochs: int = option(5, "passes over the text", minimum=1)
    batch_size: int = option(32, "parallel text streams", minimum=1)
    steps: int = option(100, "truncated-BPTT window in characters", minimum=1)
    learning_rate: float = option(2e-3, "Adam's learning rate", minimum=0.0)
    clipnorm: float = option(1.0, "gradient-norm clipping", minimum=0.0)
    max_chars: int | None = option(None, "use only this many training characters", minimum=1)
    seed: int = option(0, "random seed", minimum=0)
    patience: int | None = option(None, "early stopping on the validation loss after this many epochs", minimum=1)


@dataclass
class TextClassConfig(ComputeOptions):
    model: str = option("bigru", "classifier", choices=CLASSIFIERS)
    # the bag's validation loss is lowest after 11 epochs, the recurrent models' after 2 to 6; the checkpoint keeps
    # each model's best epoch (bench/textclass_search.py)
    epochs: int = option(12, "passes over the training quotes", minimum=1)
    batch_size: int = option(32, "quotes per batch", minimum=1)
    learning_rate: float = option(2e-3, "Adam's learning rate", minimum=0.0)
    sequence_length: int = option(128, "words per quote (padded or cut)", minimum=1)
    max_tokens: int = option(20000, "vocabulary size", minimum=3)
    dropout: float = option(0.3, "dropout before the softmax layer", minimum=0.0, maximum=0.95)
    limit: int | None = option(None, "use at most this many quotes per split", minimum=1)
    seed: int = option(0, "random seed", minimum=0)
    patience: int | None = option(None, "early stopping on the validation loss after this many epochs", minimum=1)


@dataclass
class DatesConfig(ComputeOptions):
    model: str = option("bahdanau", "seq2seq model", choices=SEQ2SEQ)
    epochs: int = option(10, "passes over the training dates", minimum=1)
    batch_size: int = option(64, "dates per batch", minimum=1)
    learning_rate: float = option(2e-3, "Adam's learning rate", minimum=0.0)
    train_size: int = option(20000, "generated training dates", minimum=1)
    val_size: int = option(1000, "generated validation dates", minimum=1)
    test_size: int = option(1000, "generated test dates", minimum=1)
    seed: int = option(0, "random seed", minimum=0)
    patience: int | None = option(None, "early stopping on the validation loss after this many epochs", minimum=1)


@dataclass
class CaptionConfig(ComputeOptions):
    scenes_config: str = option("fashion_mnist_96", "tfds scene dataset generated_scenes/<name>", flag="--scenes")
    data_dir: str | None = option(None, "tfds data folder (none: data/tensorflow_datasets)")
    max_objects: int = option(2, "use scenes with 1..N items", minimum=1, maximum=2)
    epochs: int = option(8, "passes over the training scenes (and their mirror images)", minimum=1)
    batch_size: int = option(64, "scenes per batch", minimum=1)
    learning_rate: float = option(2e-3, "Adam's learning rate", minimum=0.0)
    lr_schedule: str = option("cosine", "cosine: the rate decays to 0 over the run's steps; constant: it stays",
                              choices=("cosine", "constant"))
    mirror: bool = option(True, "also train on every scene flipped left-right, its caption rewritten")
    limit: int | None = option(None, "use at most this many scenes per split", minimum=1)
    seed: int = option(0, "random seed", minimum=0)
    patience: int | None = option(None, "early stopping on the validation loss after this many epochs", minimum=1)


CONFIGS = {"charlm": CharLMConfig, "textclass": TextClassConfig, "dates": DatesConfig, "caption": CaptionConfig}
