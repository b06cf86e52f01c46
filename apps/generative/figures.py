"""What the generative models share when they are trained, evaluated, sampled and exported: the PNGs, the
per-epoch sample callbacks, drawing samples from a decoder/generator, judging them, and the serving inputs.

Each model family (autoencoders.Autoencoder, vae.VAE, gan.GAN, cyclegan.CycleGAN) answers the same questions
with these pieces: `compile_for_run`, `fit_data`, `epoch_figures`, `evaluation_figures`, `judge_scores`,
`sampler` and `serving_model`; `app.py` asks them and never switches on the family.
"""

import os

import keras
import numpy as np

from core import plots
from core.errors import UserError


def say(*paths):
    for path in paths:
        print(f"wrote {path}")


def reconstruction_png(originals, reconstructions, path, title):
    grid = np.clip(np.concatenate([originals, reconstructions]), 0, 1)
    titles = ["input"] * len(originals) + ["reconstruction"] * len(reconstructions)
    return plots.image_grid(grid, titles, path, columns=len(originals), title=title)


def save_mosaic(mosaic, path):
    """One big image (H, W, C) in [0, 1] as a PNG, pixel for pixel."""
    import matplotlib.pyplot as plt  # core.plots has set the Agg backend

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    image = np.clip(mosaic, 0, 1)
    plt.imsave(path, image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
    return path


def generate(family, config, num, labels=None, seed=0):
    """`num` new images from the family's decoder/generator, latents from N(0, I) (for an autoencoder, whose
    codes were never made Gaussian, they are rough), and the labels used (None if unconditional)."""
    generator, conditional = family.sampler()
    if generator is None:
        raise UserError(f"{config['model']} translates images; it has no latent space to sample from")
    latent = np.random.default_rng(seed).standard_normal((num, config["latent_dim"])).astype(np.float32)
    if conditional:
        labels = np.asarray(labels if labels is not None else np.arange(num) % len(config["class_names"]), np.int32)
        return np.asarray(generator.predict([latent, labels], verbose=0, batch_size=500)), labels
    return np.asarray(generator.predict(latent, verbose=0, batch_size=500)), None


def sample_grid(family, config, num, path, title, seed=1):
    """A PNG of `num` samples, titled by class when conditional."""
    samples, labels = generate(family, config, num, seed=seed)
    titles = [config["class_names"][i] for i in labels] if labels is not None else [""] * num
    return plots.image_grid(samples, titles, path, title=title)


def judge_samples(family, config, scorer, x_test, num_samples):
    """The judge's scores of generated samples against as many test images."""
    from apps.generative import quality

    samples, _ = generate(family, config, min(num_samples, len(x_test)), seed=3)
    scores = quality.Judge.scores(scorer, samples, x_test[:len(samples)])
    print(f"judge scores ({scores['num_samples']} samples vs test images; a suite LeNet-5, not ImageNet FID): "
          f"Fréchet distance {scores['frechet_distance']:.2f}, precision {scores['precision']:.2f}, "
          f"recall {scores['recall']:.2f}, Inception-style score {scores['inception_score']:.2f} "
          f"(real {scores['real_inception_score']:.2f}), classes covered {scores['modes_covered']}/"
          f"{scores['num_classes']}")
    return {"quality": scores}


def latent_serving(family, config):
    """(decoder/generator, sample inputs {latent [, labels]}, output name) for export."""
    generator, conditional = family.sampler()
    inputs = {"latent": np.random.default_rng(0).standard_normal((32, config["latent_dim"])).astype(np.float32)}
    if conditional:
        inputs["labels"] = (np.arange(32) % len(config["class_names"])).astype(np.int32)
    return generator, inputs, "images"


class EpochSamples(keras.callbacks.Callback):
    """After each epoch, a PNG grid of images from fixed latents (one row per class when conditional)."""

    def __init__(self, folder, latent_dim, num_classes=0, class_names=(), seed=0):
        super().__init__()
        self.folder = folder
        rng = np.random.default_rng(seed)
        rows = num_classes or 4
        self.latent = rng.standard_normal((rows * 8, latent_dim)).astype(np.float32)
        self.labels = np.repeat(np.arange(rows), 8).astype(np.int32) if num_classes else None
        self.titles = [class_names[i] for i in self.labels] if num_classes else [""] * len(self.latent)

    def on_epoch_end(self, epoch, logs=None):
        images = np.asarray(self.model.generate(self.latent, self.labels))
        path = plots.image_grid(images, self.titles, os.path.join(self.folder, f"epoch_{epoch + 1:03d}.png"),
                                title=f"{self.model.name} samples after epoch {epoch + 1}")
        print(f"wrote {path}")


class EpochTranslations(keras.callbacks.Callback):
    """After each epoch, a PNG of fixed domain-A images and their translations to B."""

    def __init__(self, folder, images_a):
        super().__init__()
        self.folder, self.images_a = folder, images_a

    def on_epoch_end(self, epoch, logs=None):
        fake_b = np.asarray(self.model.g_ab(self.images_a))
        grid = np.concatenate([self.images_a, fake_b])
        titles = ["A"] * len(self.images_a) + ["A -> B"] * len(fake_b)
        path = plots.image_grid(grid, titles, os.path.join(self.folder, f"epoch_{epoch + 1:03d}.png"),
                                title=f"cyclegan after epoch {epoch + 1}")
        print(f"wrote {path}")
