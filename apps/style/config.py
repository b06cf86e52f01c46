"""The settings of apps.style: the single source of their defaults (`core.cli.add_config_flags` makes the flags).

`StylizerConfig`: `train` of the fast stylizer (Johnson et al.); `TransferConfig`: the per-image optimisation
`transfer` (Gatys et al.). Images are files or skimage.data photo names; features 'random' (offline: a multi-scale
random-weight CNN) or 'vgg19' with --weights PATH (ImageNet notop .h5) or --weights imagenet (downloads)."""

from dataclasses import dataclass

from core.cli import option
from core.errors import UserError
from core.precision import ComputeOptions

FEATURES = ("random", "vgg19")
MODELS = ("fast",)  # the feed-forward stylizer: saved_models/style_fast/, runs/style/fast/


@dataclass
class LossConfig:
    style: str = option("immunohistochemistry", "style image (a file or a skimage.data photo)")
    content: str = option("chelsea", "content image (a file or a skimage.data photo)")
    features: str = option("random", "feature network", choices=FEATURES)
    weights: str | None = option(None, "VGG19 weights: an .h5 path, or 'imagenet' to download")
    style_weight: float = option(1e5, "weight of the Gram-matrix style loss", minimum=0.0)
    content_weight: float = option(1.0, "weight of the content loss", minimum=0.0)
    tv_weight: float = option(1.0, "weight of the total-variation prior", minimum=0.0)
    seed: int = option(0, "random seed", minimum=0)


@dataclass
class StylizerConfig(LossConfig, ComputeOptions):
    model: str = option("fast", "the stylizer network", choices=MODELS)
    steps: int = option(300, "Adam steps", minimum=1)
    size: int = option(64, "side of the square training crops (a multiple of 4)", minimum=16)
    batch_size: int = option(4, "crops per step (global: split over the replicas)", minimum=1)
    learning_rate: float = option(2e-3, "Adam's learning rate", minimum=0.0)

    def __post_init__(self):
        if self.size % 4:  # found before TensorFlow starts, in one line
            raise UserError(f"--size must be a multiple of 4 (the stylizer halves it twice), got {self.size}")
        if self.precision == "mixed_float16":
            raise UserError("--precision mixed_float16: the stylizer's own training step does not scale its loss, "
                            "so float16 gradients would underflow; use mixed_bfloat16 (it needs no loss scaling)")


@dataclass
class TransferConfig(LossConfig):
    size: int = option(128, "side of the square images", minimum=16)
    steps: int = option(200, "Adam steps on the pixels", minimum=1)
    learning_rate: float = option(4.0, "Adam step in pixel units", minimum=0.0)
