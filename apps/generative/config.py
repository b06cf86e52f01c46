"""The generative app's training configuration: one dataclass, the single source of the defaults.

`latent_dim` and `learning_rate` default to `None`, "the model's own" (a VAE draws its 2-D manifold, a GAN wants
a 64-D latent and Radford et al.'s 2e-4): `with_model_defaults` fills them in before the run records its
config.json, so the file states the numbers the run used and `--config` reruns the same experiment.
"""

import dataclasses
from dataclasses import dataclass

from core.cli import option
from core.errors import UserError
from core.precision import ComputeOptions

MODEL_NAMES = ("ae", "conv_ae", "linear_ae", "sparse_ae", "denoising_ae", "vae", "cvae", "gan", "dcgan", "cgan",
               "wgan_gp", "cyclegan")
GAN_LOSSES = ("minimax", "non_saturating", "least_squares", "wasserstein")

# The model's own values where a field says "none: the model's own".
DEFAULT_LATENT_DIM = {"ae": 32, "conv_ae": 32, "linear_ae": 16, "sparse_ae": 64, "denoising_ae": 32, "vae": 2,
                      "cvae": 2, "gan": 64, "dcgan": 64, "cgan": 64, "wgan_gp": 64, "cyclegan": None}
DEFAULT_LEARNING_RATE = {"gan": 2e-4, "dcgan": 2e-4, "cgan": 2e-4, "wgan_gp": 1e-4, "cyclegan": 2e-4}


@dataclass
class TrainConfig(ComputeOptions):
    model: str = option("vae", "model", choices=MODEL_NAMES)
    dataset: str = option("fashion_mnist", "fashion_mnist, mnist5k, digits or tfds:NAME")
    epochs: int = option(5, "passes over the training images", minimum=1)
    batch_size: int = option(128, "batch size per replica", minimum=1)
    latent_dim: int | None = option(None, "latent size (none: the model's own; VAE 2, GANs 64, AEs 16-64)", minimum=1)
    learning_rate: float | None = option(None, "Adam's rate (none: 1e-3, GANs 2e-4, WGAN-GP 1e-4)", minimum=0.0)
    seed: int = option(0, "random seed", minimum=0)
    limit: int | None = option(None, "use at most this many examples per split", minimum=1)
    val_fraction: float = option(0.1, "share of the training images held out for validation", minimum=0.0,
                                 maximum=0.9)
    patience: int | None = option(None, "early stopping after this many epochs without improvement", minimum=1)
    noise: str = option("gaussian", "denoising_ae corruption", choices=("gaussian", "masking"))
    noise_level: float = option(0.3, "denoising_ae: Gaussian std or masked share", minimum=0.0)
    sparsity_target: float = option(0.05, "sparse_ae target activation ρ", minimum=0.0, maximum=1.0)
    sparsity_weight: float = option(0.1, "sparse_ae penalty weight β", minimum=0.0)
    likelihood: str = option("bernoulli", "VAE decoder likelihood", choices=("bernoulli", "gaussian"))
    kl: str = option("analytic", "VAE KL term (tfp)", choices=("analytic", "sampled"))
    gan_loss: str | None = option(None, "GAN loss (none: the model's own)", choices=GAN_LOSSES)
    feature_matching: bool = option(False, "GAN generator trained on feature matching")
    minibatch_discrimination: bool = option(False, "minibatch-discrimination layer in the GAN discriminator")
    critic_steps: int | None = option(None, "discriminator steps per generator step (none: the model's own)",
                                      minimum=1)
    domains: tuple[int, ...] = option((7, 9), "cyclegan: the classes of domains A and B")
    cycle_weight: float = option(10.0, "cyclegan λ of the cycle loss", minimum=0.0)


def with_model_defaults(config):
    """`config` with "the model's own" values filled in (what the run records and uses)."""
    if len(config.domains) != 2:
        raise UserError(f"--domains needs two classes (A B, like 7 9), got {len(config.domains)}: "
                        f"{' '.join(map(str, config.domains)) or 'none'}")
    return dataclasses.replace(
        config, latent_dim=config.latent_dim or DEFAULT_LATENT_DIM[config.model],
        learning_rate=config.learning_rate or DEFAULT_LEARNING_RATE.get(config.model, 1e-3))
