"""Autoencoders: undercomplete (dense, convolutional), linear (vs PCA), sparse,
denoising, and a stacked autoencoder pre-trained greedily layer by layer.

Every model here works on images scaled to [0, 1] (pixels / 255). An
autoencoder is a functional model `autoencoder(x) = decoder(encoder(x))`
whose nested models are named "encoder" and "decoder", so a loaded run can
hand out its decoder (latent -> image) for sampling and export.
"""

import os

import keras
import numpy as np
from keras import layers, ops

from core import precision
from losses import sparsity_penalty

# --------------------------------------------------------------------------
# Two small layers the autoencoders need.


@keras.saving.register_keras_serializable(package="generative")
class MaskingNoise(layers.Layer):
    """Masking corruption of denoising autoencoders (Vincent et al. 2008):
    each input value is set to 0 with probability `rate`, in training only.
    Unlike Dropout, the kept values are not rescaled by 1/(1 - rate)."""

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        if not training or self.rate <= 0.0:
            return inputs
        keep = keras.random.uniform(ops.shape(inputs), seed=self.seed_generator, dtype=inputs.dtype) >= self.rate
        return inputs * ops.cast(keep, inputs.dtype)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package="generative")
class SparsityRegularizer(layers.Layer):
    """Identity on the code that adds `weight * sparsity_penalty(code, target)`
    (Σ_j KL(ρ || ρ̂_j), `losses.sparsity_penalty`) to the model's loss."""

    def __init__(self, target=0.05, weight=1.0, **kwargs):
        super().__init__(**kwargs)
        self.target = float(target)
        self.weight = float(weight)

    def call(self, inputs):
        self.add_loss(self.weight * sparsity_penalty(inputs, self.target))
        return inputs

    def get_config(self):
        return {**super().get_config(), "target": self.target, "weight": self.weight}


def corrupt(images, kind, level, seed=0):
    """Corrupt [0, 1] images outside a model (for evaluation): Gaussian noise of
    standard deviation `level` (clipped to [0, 1]) or masking of a `level` share."""
    rng = np.random.default_rng(seed)
    images = np.asarray(images, np.float32)
    if kind == "gaussian":
        return np.clip(images + rng.normal(0.0, level, images.shape), 0.0, 1.0).astype(np.float32)
    if kind == "masking":
        return (images * (rng.uniform(size=images.shape) >= level)).astype(np.float32)
    raise ValueError(f"unknown noise '{kind}'; choose gaussian or masking")


# --------------------------------------------------------------------------
# Encoders and decoders.


def dense_encoder(image_shape, latent_dim, hidden=(256,), activation="relu", code_activation=None,
                  name="encoder"):
    images = keras.Input(shape=image_shape, name="images")
    x = layers.Flatten()(images)
    for i, units in enumerate(hidden):
        x = layers.Dense(units, activation=activation, name=f"enc_dense{i + 1}")(x)
    # the last layers in float32 under a mixed policy (core.precision.output_dtype): codes and images leave as float32
    code = layers.Dense(latent_dim, activation=code_activation, name="code", dtype=precision.output_dtype())(x)
    return keras.Model(images, code, name=name)


def dense_decoder(image_shape, latent_dim, hidden=(256,), activation="relu", output_activation="sigmoid",
                  name="decoder"):
    latent = keras.Input(shape=(latent_dim,), name="latent")
    x = latent
    for i, units in enumerate(reversed(hidden)):
        x = layers.Dense(units, activation=activation, name=f"dec_dense{i + 1}")(x)
    x = layers.Dense(int(np.prod(image_shape)), activation=output_activation, name="pixels")(x)
    return keras.Model(latent, layers.Reshape(image_shape, dtype=precision.output_dtype())(x), name=name)


def _check_conv_shape(image_shape):
    if image_shape[0] % 4 or image_shape[1] % 4:
        raise ValueError(f"the convolutional models need a height and width divisible by 4, got {image_shape}")


def conv_encoder(image_shape, latent_dim, filters=(32, 64), name="encoder"):
    _check_conv_shape(image_shape)
    images = keras.Input(shape=image_shape, name="images")
    x = images
    for i, f in enumerate(filters):
        x = layers.Conv2D(f, 3, strides=2, padding="same", activation="relu", name=f"enc_conv{i + 1}")(x)
    x = layers.Flatten()(x)
    return keras.Model(images, layers.Dense(latent_dim, name="code", dtype=precision.output_dtype())(x), name=name)


def conv_decoder(image_shape, latent_dim, filters=(64, 32), output_activation="sigmoid", name="decoder"):
    _check_conv_shape(image_shape)
    height, width, channels = image_shape
    latent = keras.Input(shape=(latent_dim,), name="latent")
    x = layers.Dense((height // 4) * (width // 4) * filters[0], activation="relu", name="project")(latent)
    x = layers.Reshape((height // 4, width // 4, filters[0]))(x)
    x = layers.Conv2DTranspose(filters[1], 3, strides=2, padding="same", activation="relu", name="dec_deconv1")(x)
    x = layers.Conv2DTranspose(channels, 3, strides=2, padding="same", activation=output_activation,
                               name="dec_deconv2", dtype=precision.output_dtype())(x)
    return keras.Model(latent, x, name=name)


# --------------------------------------------------------------------------
# The autoencoders by name (see models.py for the registry).


def _autoencoder(encoder, decoder, name, corruption=None):
    images = keras.Input(shape=encoder.input.shape[1:], name="images")
    x = corruption(images) if corruption is not None else images
    return keras.Model(images, decoder(encoder(x)), name=name)


def dense_ae(image_shape, latent_dim=32, hidden=(256,)):
    """Undercomplete dense autoencoder: 784 -> 256 -> latent -> 256 -> 784, sigmoid output."""
    return _autoencoder(dense_encoder(image_shape, latent_dim, hidden),
                        dense_decoder(image_shape, latent_dim, hidden), "ae")


def conv_ae(image_shape, latent_dim=32):
    """Undercomplete convolutional autoencoder: two stride-2 convs, two stride-2 transposed convs."""
    return _autoencoder(conv_encoder(image_shape, latent_dim), conv_decoder(image_shape, latent_dim), "conv_ae")


def linear_ae(image_shape, latent_dim=16):
    """Linear autoencoder, trained with squared error: its decoder spans the
    principal subspace of the data (Baldi & Hornik 1989), see `pca_angles`."""
    return _autoencoder(dense_encoder(image_shape, latent_dim, hidden=()),
                        dense_decoder(image_shape, latent_dim, hidden=(), output_activation=None), "linear_ae")


def sparse_ae(image_shape, latent_dim=64, hidden=(256,), target=0.05, weight=0.1):
    """Sparse autoencoder: sigmoid code units kept to a mean activation ρ by the KL sparsity penalty."""
    encoder = dense_encoder(image_shape, latent_dim, hidden, code_activation="sigmoid")
    code = SparsityRegularizer(target, weight, name="sparsity")(encoder.output)
    encoder = keras.Model(encoder.input, code, name="encoder")
    return _autoencoder(encoder, dense_decoder(image_shape, latent_dim, hidden), "sparse_ae")


def denoising_ae(image_shape, latent_dim=32, noise="gaussian", level=0.3):
    """Denoising autoencoder (Vincent et al. 2008): corrupted input in training, clean target."""
    if noise == "gaussian":
        corruption = layers.GaussianNoise(level, name="corruption")
    elif noise == "masking":
        corruption = MaskingNoise(level, name="corruption")
    else:
        raise ValueError(f"unknown noise '{noise}'; choose gaussian or masking")
    return _autoencoder(conv_encoder(image_shape, latent_dim), conv_decoder(image_shape, latent_dim),
                        "denoising_ae", corruption)


# --------------------------------------------------------------------------
# Linear autoencoder vs PCA.


def pca_components(x, k):
    """The top-k principal directions of the rows of x, as columns (d, k)."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    _, _, vt = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    return vt[:k].T


def principal_angles(a, b):
    """Principal angles (degrees, ascending) between the column spaces of a and b (Björck & Golub 1973)."""
    qa, _ = np.linalg.qr(np.asarray(a, np.float64))
    qb, _ = np.linalg.qr(np.asarray(b, np.float64))
    cosines = np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False), -1.0, 1.0)
    return np.sort(np.degrees(np.arccos(cosines)))


def decoder_subspace(autoencoder):
    """The span of a linear decoder's weights: columns (d, k)."""
    kernel = autoencoder.get_layer("decoder").get_layer("pixels").kernel
    return np.asarray(kernel).T


def pca_angles(autoencoder, x):
    """Principal angles between the linear AE's decoder subspace and PCA's."""
    basis = decoder_subspace(autoencoder)
    return principal_angles(basis, pca_components(x, basis.shape[1]))


# --------------------------------------------------------------------------
# Stacked autoencoder: greedy layer-wise pre-training, fine-tuning, and the
# pre-training experiment (Hinton & Salakhutdinov 2006; Bengio et al. 2007).


def _train_layer(inputs, units, index, *, epochs, batch_size, learning_rate, output_activation, seed, log):
    dim = inputs.shape[1]
    x = keras.Input(shape=(dim,))
    enc = layers.Dense(units, activation="sigmoid", name=f"enc{index}")
    dec = layers.Dense(dim, activation=output_activation, name=f"dec{index}")
    model = keras.Model(x, dec(enc(x)))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
    history = model.fit(inputs, inputs, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True)
    log(f"  layer {dim} -> {units}: reconstruction MSE {history.history['loss'][0]:.4f} -> "
        f"{history.history['loss'][-1]:.4f}")
    return enc, dec


def stacked_autoencoder(x, sizes=(256, 64), *, epochs=3, finetune_epochs=3, batch_size=128,
                        learning_rate=1e-3, seed=0, log=print):
    """Greedy layer-wise pre-training, then end-to-end fine-tuning.

    Layer i is a one-hidden-layer autoencoder of the codes of layer i-1;
    the encoders and decoders are then stacked (x -> h1 -> ... -> hK -> ... -> x̂)
    and fine-tuned together. Returns (encoder, autoencoder, report)."""
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    keras.utils.set_random_seed(seed)
    encoders, decoders, codes = [], [], x
    log(f"greedy pre-training of {len(sizes)} layers on {len(x)} images")
    for i, units in enumerate(sizes):
        enc, dec = _train_layer(codes, units, i + 1, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                                output_activation="sigmoid", seed=seed, log=log)
        encoders.append(enc)
        decoders.append(dec)
        codes = np.asarray(enc(codes))
    inputs = keras.Input(shape=(x.shape[1],), name="pixels")
    h = inputs
    for enc in encoders:
        h = enc(h)
    encoder = keras.Model(inputs, h, name="stacked_encoder")
    out = h
    for dec in reversed(decoders):
        out = dec(out)
    autoencoder = keras.Model(inputs, out, name="stacked_ae")
    autoencoder.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
    before = float(autoencoder.evaluate(x, x, verbose=0, batch_size=512))
    autoencoder.fit(x, x, epochs=finetune_epochs, batch_size=batch_size, verbose=0, shuffle=True)
    after = float(autoencoder.evaluate(x, x, verbose=0, batch_size=512))
    log(f"fine-tuning end to end: reconstruction MSE {before:.4f} -> {after:.4f}")
    return encoder, autoencoder, {"stacked_mse_before_finetune": before, "stacked_mse_after_finetune": after}


def classifier_from_encoder(encoder, num_classes, pretrained=True, seed=0):
    """A classifier with the stacked encoder's architecture and a softmax on top;
    `pretrained=False` gives the same architecture with fresh random weights."""
    keras.utils.set_random_seed(seed)
    if pretrained:
        body = keras.models.clone_model(encoder)
        body.set_weights(encoder.get_weights())
    else:
        body = keras.models.clone_model(encoder)  # clone_model re-initializes the weights
    probabilities = layers.Dense(num_classes, activation="softmax", name="probabilities")(body.output)
    return keras.Model(body.input, probabilities, name="pretrained" if pretrained else "random_init")


def pretraining_experiment(x_unlabelled, x_labelled, y_labelled, x_test, y_test, num_classes, *,
                           sizes=(256, 64), epochs=3, finetune_epochs=3, classifier_epochs=30,
                           learning_rate=1e-3, seed=0, log=print):
    """Pre-train a stacked AE on unlabelled images, then train a classifier on a
    small labelled subset starting from (a) the pre-trained encoder and (b) a
    random initialization; report both test accuracies."""
    encoder, _, report = stacked_autoencoder(x_unlabelled, sizes, epochs=epochs, finetune_epochs=finetune_epochs,
                                             learning_rate=learning_rate, seed=seed, log=log)
    flat = lambda a: np.asarray(a, np.float32).reshape(len(a), -1)
    for pretrained in (True, False):
        net = classifier_from_encoder(encoder, num_classes, pretrained, seed)
        net.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                    metrics=["accuracy"])
        net.fit(flat(x_labelled), y_labelled, epochs=classifier_epochs, batch_size=32, verbose=0, shuffle=True)
        _, accuracy = net.evaluate(flat(x_test), y_test, verbose=0, batch_size=512)
        key = "accuracy_pretrained" if pretrained else "accuracy_random_init"
        report[key] = float(accuracy)
        log(f"classifier on {len(x_labelled)} labels, {'pre-trained' if pretrained else 'random'} init: "
            f"test accuracy {accuracy:.4f}")
    return report


# --------------------------------------------------------------------------
# What app.py asks of every model family (see figures.py), for the functional autoencoders above.

NOISE_LEVELS = (0.1, 0.3, 0.5)


class Autoencoder:
    """The family methods of an autoencoder (a functional model, saved as one): trained on (x, x), evaluated
    by reconstruction error, plus the linear AE's PCA comparison, the sparse AE's code statistics and the
    denoising AE's corrupted inputs; its decoder samples (roughly) and is exported."""

    def __init__(self, net):
        self.net = net

    def compile_for_run(self, learning_rate):
        loss = "mse" if self.net.name == "linear_ae" else "binary_crossentropy"
        self.net.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=["mse"])

    def fit_data(self, images, config, global_batch):
        from core import data

        def pair(x, y):
            return x / 255.0, x / 255.0

        train = data.batched(images.train.map(pair), global_batch, shuffle=True, seed=config.seed)
        return train, data.batched(images.val.map(pair), global_batch), {}

    def epoch_figures(self, folder, images, config):
        return None  # reconstructions come from `evaluate`

    def sampler(self):
        return self.net.get_layer("decoder"), False

    def serving_model(self, config, test_images):
        from apps.generative import figures

        return figures.latent_serving(self, config)

    def judge_scores(self, config, scorer, x_test, y_test, num_samples):
        return {}  # its codes were never made Gaussian: samples from N(0, I) say little

    def evaluation_figures(self, config, images, x_test, y_test, out):
        from apps.generative import figures

        recon = np.asarray(self.net.predict(x_test, batch_size=500, verbose=0))
        mse = float(np.mean((recon - x_test) ** 2))
        print(f"{config['model']} on {images.name}: test reconstruction MSE {mse:.5f} ({len(x_test)} images)")
        figures.say(figures.reconstruction_png(x_test[:10], recon[:10], os.path.join(out, "reconstructions.png"),
                                               f"{config['model']}: test MSE {mse:.4f}"))
        extra = {"linear_ae": self._pca_comparison, "sparse_ae": self._code_statistics,
                 "denoising_ae": self._denoising}.get(config["model"])
        return {"test_mse": mse, **(extra(config, images, x_test, out) if extra else {})}

    def _pca_comparison(self, config, images, x_test, out):
        from apps.generative.common import arrays

        x_train, _ = arrays(images.train, 10_000)
        angles = pca_angles(self.net, x_train)
        print(f"principal angles between the linear AE's decoder subspace and PCA's (degrees): "
              f"max {angles.max():.2f}, mean {angles.mean():.2f}")
        pca = pca_components(x_train, config["latent_dim"])
        mean = x_train.reshape(len(x_train), -1).mean(axis=0)
        centered = x_test.reshape(len(x_test), -1) - mean
        pca_mse = float(np.mean((centered @ pca @ pca.T + mean - x_test.reshape(len(x_test), -1)) ** 2))
        print(f"PCA with {config['latent_dim']} components: test MSE {pca_mse:.5f}")
        return {"principal_angles_deg": angles.tolist(), "pca_test_mse": pca_mse}

    def _code_statistics(self, config, images, x_test, out):
        codes = np.asarray(self.net.get_layer("encoder").predict(x_test, batch_size=500, verbose=0))
        print(f"sparse code: mean activation {codes.mean():.3f} (target {config['sparsity_target']}), "
              f"{100 * np.mean(codes < 0.1):.0f}% of activations below 0.1")
        return {"mean_code_activation": float(codes.mean()), "share_of_codes_below_0.1": float(np.mean(codes < 0.1))}

    def _denoising(self, config, images, x_test, out):
        from apps.generative import figures
        from core import plots

        metrics, rows, titles = {}, [], []
        for kind in ("gaussian", "masking"):
            for level in NOISE_LEVELS:
                noisy = corrupt(x_test, kind, level, seed=0)
                cleaned = np.asarray(self.net.predict(noisy, batch_size=500, verbose=0))
                metrics[f"denoised_mse_{kind}_{level}"] = float(np.mean((cleaned - x_test) ** 2))
                metrics[f"noisy_mse_{kind}_{level}"] = float(np.mean((noisy - x_test) ** 2))
                print(f"{kind:8s} noise {level:.1f}: MSE noisy {metrics[f'noisy_mse_{kind}_{level}']:.4f} -> "
                      f"denoised {metrics[f'denoised_mse_{kind}_{level}']:.4f}")
                rows += [noisy[:8], cleaned[:8]]
                titles += [f"{kind} {level}"] * 8 + ["denoised"] * 8
        figures.say(plots.image_grid(np.clip(np.concatenate(rows), 0, 1), titles, os.path.join(out, "denoising.png"),
                                     title="denoising autoencoder: corrupted inputs and outputs"))
        return metrics
