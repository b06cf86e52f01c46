"""Generative and unsupervised models: train, evaluate, sample, export.

The story, top to bottom:
  train     load the dataset (pixels scaled to [0, 1]), pick the strategy,
            build and compile the model inside its scope, fit with
            checkpoints that resume after a kill. Autoencoders and VAEs keep
            the best model on the validation loss; GANs keep the last epoch
            and write a PNG grid of samples from fixed latents after each.
  evaluate  reconstruction error / ELBO / NLL on the test split, the
            family's PNGs, and sample-quality scores from the judge
            classifier (`judge` trains it).
  sample    a PNG grid of new images from the decoder or generator.
  export    the decoder / generator (latent [+ label] -> image) as a
            SavedModel and TFLite files, parity-checked.
  pretrain  the stacked-autoencoder pre-training experiment.

The concept experiments live in their own modules, each with `run(out=, small=, seed=)`:
overcomplete.py (overcomplete autoencoders), unrolled.py (unrolled GAN), pix2pix.py (edges -> item).
"""

import json
import os

import keras
import numpy as np

from apps.generative.common import arrays, to_unit
from apps.generative.models import DEFAULT_LATENT_DIM, DEFAULT_LEARNING_RATE, FAMILY, MODELS
from core import data, distribute, export, plots, training
from core.errors import UserError

APP = "generative"
ROOT = os.path.join("runs", APP)
NOISE_LEVELS = (0.1, 0.3, 0.5)


def default_out(model):
    return os.path.join(ROOT, model)


def _say(*paths):
    for path in paths:
        print(f"wrote {path}")


# --------------------------------------------------------------------------
# train


def _options(model, latent_dim, seed, **kwargs):
    options = dict(latent_dim=latent_dim or DEFAULT_LATENT_DIM[model], seed=seed, noise="gaussian", noise_level=0.3,
                   sparsity_target=0.05, sparsity_weight=0.1, likelihood="bernoulli", kl="analytic",
                   gan_loss=None, feature_matching=False, minibatch_discrimination=False, critic_steps=None,
                   cycle_weight=10.0, domains=(7, 9))
    options.update({k: v for k, v in kwargs.items() if v is not None})
    options["domains"] = list(options["domains"])
    return options


def _compile(net, family, model, learning_rate):
    if family == "autoencoder":
        loss = "mse" if model == "linear_ae" else "binary_crossentropy"
        net.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=["mse"])
    elif family == "vae":
        net.compile(optimizer=keras.optimizers.Adam(learning_rate))
    elif family == "gan":
        beta_1 = 0.0 if model == "wgan_gp" else 0.5  # Radford et al.; Gulrajani et al. use β = (0, 0.9)
        beta_2 = 0.9 if model == "wgan_gp" else 0.999
        net.compile(d_optimizer=keras.optimizers.Adam(learning_rate, beta_1=beta_1, beta_2=beta_2),
                    g_optimizer=keras.optimizers.Adam(learning_rate, beta_1=beta_1, beta_2=beta_2))
    else:
        net.compile(g_optimizer=keras.optimizers.Adam(learning_rate, beta_1=0.5),
                    d_optimizer=keras.optimizers.Adam(learning_rate, beta_1=0.5))


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


def train(*, model="vae", dataset="fashion_mnist", epochs=5, batch_size=128, latent_dim=None, learning_rate=None,
          strategy="auto", out=None, seed=0, limit=None, val_fraction=0.1, patience=None, callbacks=(),
          **model_options):
    """Train `model` on `dataset` (`batch_size` per replica); returns the model.
    `callbacks`: extra Keras callbacks for `fit`."""
    MODELS.get(model)  # an unknown name fails now, not after loading the data
    out = out or default_out(model)
    strategy = distribute.get_strategy(strategy)  # before any TF work
    training.set_seed(seed)
    images = data.load_dataset(dataset, val_fraction=val_fraction, seed=seed, limit=limit)
    family = FAMILY[model]
    options = _options(model, latent_dim, seed, **model_options)
    learning_rate = learning_rate or DEFAULT_LEARNING_RATE.get(model, 1e-3)
    global_batch = distribute.global_batch_size(batch_size, strategy)
    with strategy.scope():
        net = MODELS.get(model)(images.image_shape, images.num_classes, options)
        _compile(net, family, model, learning_rate)
    config = dict(app=APP, model=model, family=family, dataset=dataset, epochs=epochs, batch_size=batch_size,
                  learning_rate=learning_rate, limit=limit, val_fraction=val_fraction,
                  class_names=list(images.class_names), image_shape=list(images.image_shape), **options)
    writes_files = training.start_run(out, config, strategy, dataset_name=images.name, num_examples=images.num_train,
                                      global_batch=global_batch)
    train_ds, val_ds = images.train.map(to_unit), images.val.map(to_unit)
    if family == "autoencoder":
        pair = lambda x, y: (x, x)
        training.fit(net, data.batched(train_ds.map(pair), global_batch, shuffle=True, seed=seed),
                     data.batched(val_ds.map(pair), global_batch), epochs=epochs, run_dir=out, patience=patience,
                     writes_files=writes_files, extra_callbacks=list(callbacks))
    elif family == "vae":
        callbacks = list(callbacks)
        if writes_files:
            callbacks.append(EpochSamples(os.path.join(out, "samples"), options["latent_dim"],
                                          net.num_classes, images.class_names, seed))
        training.fit(net, data.batched(train_ds, global_batch, shuffle=True, seed=seed),
                     data.batched(val_ds, global_batch), epochs=epochs, run_dir=out, patience=patience,
                     writes_files=writes_files, extra_callbacks=callbacks)
    elif family == "gan":
        callbacks = list(callbacks) + ([EpochSamples(os.path.join(out, "samples"), options["latent_dim"],
                                                     net.num_classes, images.class_names, seed)]
                                        if writes_files else [])
        # Whole batches only: minibatch discrimination and batch norm see full batches.
        # No validation loss tells a better generator: keep the last (finite) epoch.
        training.fit(net, data.batched(train_ds, global_batch, shuffle=True, seed=seed, drop_remainder=True), None,
                     epochs=epochs, run_dir=out, monitor=None, patience=patience, writes_files=writes_files,
                     extra_callbacks=callbacks)
    else:
        from apps.generative import cyclegan

        a_ids, b_ids = options["domains"]
        _check_domains(images, a_ids, b_ids)
        train_pairs = cyclegan.unpaired(cyclegan.domain(train_ds, [a_ids]), cyclegan.domain(train_ds, [b_ids]),
                                        global_batch, seed)
        val_pairs = cyclegan.unpaired(cyclegan.domain(val_ds, [a_ids]), cyclegan.domain(val_ds, [b_ids]),
                                      global_batch, seed)
        fixed_a, _ = arrays(cyclegan.domain(images.test, [a_ids]), 8)
        callbacks = list(callbacks) + ([EpochTranslations(os.path.join(out, "samples"), fixed_a)]
                                       if writes_files else [])
        training.fit(net, train_pairs, val_pairs, epochs=epochs, run_dir=out, monitor="val_cycle_loss",
                     patience=patience, writes_files=writes_files, extra_callbacks=callbacks)
    return net


def _check_domains(images, a, b):
    for class_id in (a, b):
        if not 0 <= class_id < images.num_classes:
            raise UserError(f"--domains: class {class_id} is not one of 0..{images.num_classes - 1} "
                            f"({', '.join(images.class_names)})")
    if a == b:
        raise UserError("--domains needs two different classes")


# --------------------------------------------------------------------------
# Loading a run and its generator.


def load_run(out):
    from apps.generative import autoencoders, cyclegan, gan, vae  # noqa: F401  (register the custom classes)

    config = training.load_config(out)
    net = training.load_trained_model(out)
    _check_family(net, config, out)
    if config["family"] in ("vae", "cyclegan") and not getattr(net, "compiled", False):
        # `evaluate` runs their test_step; the optimizer state is not needed for that.
        _compile(net, config["family"], config["model"], config["learning_rate"])
    return config, net


def _check_family(net, config, out):
    """Refuse a model.keras that is not of the family config.json names (a file of another run)."""
    from apps.generative import cyclegan, gan, vae

    family = config["family"]
    kinds = {"vae": vae.VAE, "gan": gan.GAN, "cyclegan": cyclegan.CycleGAN}
    if family in kinds:
        fits = isinstance(net, kinds[family])
    else:  # an autoencoder: a functional model whose decoder `generator_of` samples from
        fits = any(layer.name == "decoder" for layer in getattr(net, "layers", []))
    if not fits:
        raise UserError(f"{os.path.join(out, training.MODEL_FILE)} holds a {type(net).__name__} "
                        f"'{net.name}', not the {config['model']} ({family}) that {training.CONFIG_FILE} names: "
                        f"the model belongs to another run; pass the right --out or train again")


def generator_of(config, net):
    """(model latent [+ labels] -> image in [0, 1], conditional?) for a run, or None for CycleGAN."""
    family = config["family"]
    if family == "autoencoder":
        return net.get_layer("decoder"), False
    if family == "vae":
        return net.generator(), bool(net.num_classes)
    if family == "gan":
        return net.generator, bool(net.num_classes)
    return None, False


def generate(config, net, num, labels=None, seed=0):
    """`num` new images; for an autoencoder, decoded from a Gaussian fitted to the codes is not
    attempted: its latents are drawn from N(0, I) like the others (so they are rough)."""
    generator, conditional = generator_of(config, net)
    if generator is None:
        raise UserError(f"{config['model']} translates images; it has no latent space to sample from")
    latent = np.random.default_rng(seed).standard_normal((num, config["latent_dim"])).astype(np.float32)
    if conditional:
        labels = np.asarray(labels if labels is not None else np.arange(num) % len(config["class_names"]), np.int32)
        return np.asarray(generator.predict([latent, labels], verbose=0, batch_size=500)), labels
    return np.asarray(generator.predict(latent, verbose=0, batch_size=500)), None


# --------------------------------------------------------------------------
# evaluate


def _test_arrays(config, limit):
    images = data.load_dataset(config["dataset"], val_fraction=config["val_fraction"], seed=config["seed"],
                               limit=limit or config.get("limit"))
    return images, *arrays(images.test)


def evaluate(*, out=None, model="vae", limit=None, num_samples=2000, judge=None):
    """Evaluate a run on the test split; writes PNGs and metrics.json; returns the metrics."""
    out = out or default_out(model)
    config, net = load_run(out)
    images, x_test, y_test = _test_arrays(config, limit)
    family = config["family"]
    evaluators = {"autoencoder": _evaluate_autoencoder, "vae": _evaluate_vae, "gan": _evaluate_gan,
                  "cyclegan": _evaluate_cyclegan}
    metrics = evaluators[family](config, net, images, x_test, y_test, out)
    metrics.update(_quality(config, net, x_test, y_test, num_samples, judge))
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    _say(os.path.join(out, "metrics.json"))
    return metrics


def _reconstruction_png(originals, reconstructions, path, title):
    grid = np.clip(np.concatenate([originals, reconstructions]), 0, 1)
    titles = ["input"] * len(originals) + ["reconstruction"] * len(reconstructions)
    return plots.image_grid(grid, titles, path, columns=len(originals), title=title)


def _save_mosaic(mosaic, path):
    """One big image (H, W, C) in [0, 1] as a PNG, pixel for pixel."""
    import matplotlib.pyplot as plt  # core.plots has set the Agg backend

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    image = np.clip(mosaic, 0, 1)
    plt.imsave(path, image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
    return path


def _evaluate_autoencoder(config, net, images, x_test, y_test, out):
    from apps.generative import autoencoders

    recon = np.asarray(net.predict(x_test, batch_size=500, verbose=0))
    mse = float(np.mean((recon - x_test) ** 2))
    metrics = {"test_mse": mse}
    print(f"{config['model']} on {images.name}: test reconstruction MSE {mse:.5f} ({len(x_test)} images)")
    _say(_reconstruction_png(x_test[:10], recon[:10], os.path.join(out, "reconstructions.png"),
                             f"{config['model']}: test MSE {mse:.4f}"))
    model = config["model"]
    if model == "linear_ae":
        x_train, _ = arrays(images.train, 10_000)
        angles = autoencoders.pca_angles(net, x_train)
        metrics["principal_angles_deg"] = angles.tolist()
        print(f"principal angles between the linear AE's decoder subspace and PCA's (degrees): "
              f"max {angles.max():.2f}, mean {angles.mean():.2f}")
        pca = autoencoders.pca_components(x_train, config["latent_dim"])
        mean = x_train.reshape(len(x_train), -1).mean(axis=0)
        centered = x_test.reshape(len(x_test), -1) - mean
        pca_recon = centered @ pca @ pca.T + mean
        metrics["pca_test_mse"] = float(np.mean((pca_recon - x_test.reshape(len(x_test), -1)) ** 2))
        print(f"PCA with {config['latent_dim']} components: test MSE {metrics['pca_test_mse']:.5f}")
    if model == "sparse_ae":
        codes = np.asarray(net.get_layer("encoder").predict(x_test, batch_size=500, verbose=0))
        metrics["mean_code_activation"] = float(codes.mean())
        metrics["share_of_codes_below_0.1"] = float(np.mean(codes < 0.1))
        print(f"sparse code: mean activation {codes.mean():.3f} (target {config['sparsity_target']}), "
              f"{100 * np.mean(codes < 0.1):.0f}% of activations below 0.1")
    if model == "denoising_ae":
        rows, titles = [], []
        for kind in ("gaussian", "masking"):
            for level in NOISE_LEVELS:
                noisy = autoencoders.corrupt(x_test, kind, level, seed=0)
                cleaned = np.asarray(net.predict(noisy, batch_size=500, verbose=0))
                metrics[f"denoised_mse_{kind}_{level}"] = float(np.mean((cleaned - x_test) ** 2))
                metrics[f"noisy_mse_{kind}_{level}"] = float(np.mean((noisy - x_test) ** 2))
                print(f"{kind:8s} noise {level:.1f}: MSE noisy {metrics[f'noisy_mse_{kind}_{level}']:.4f} -> "
                      f"denoised {metrics[f'denoised_mse_{kind}_{level}']:.4f}")
                rows += [noisy[:8], cleaned[:8]]
                titles += [f"{kind} {level}"] * 8 + ["denoised"] * 8
        _say(plots.image_grid(np.clip(np.concatenate(rows), 0, 1), titles, os.path.join(out, "denoising.png"),
                              title="denoising autoencoder: corrupted inputs and outputs"))
    return metrics


def _evaluate_vae(config, net, images, x_test, y_test, out):
    from apps.generative import vae as vae_lib

    labels = y_test if net.num_classes else None
    history = net.evaluate(x_test, y_test, batch_size=500, verbose=0, return_dict=True)
    n_nll = min(len(x_test), 1000)
    nll = float(np.mean(net.importance_sampled_nll(x_test[:n_nll], None if labels is None else labels[:n_nll],
                                                   num_samples=50)))
    metrics = {"test_negative_elbo": history["loss"], "test_reconstruction": history["reconstruction"],
               "test_kl": history["kl"], "test_nll_importance_50": nll, "likelihood": config["likelihood"]}
    print(f"{config['model']} ({config['likelihood']} likelihood, latent {config['latent_dim']}) on {images.name}: "
          f"test ELBO {-history['loss']:.2f} nats/image (reconstruction {history['reconstruction']:.2f}, "
          f"KL {history['kl']:.2f}); NLL ≈ {nll:.2f} (importance sampling, 50 samples, {n_nll} images)")
    mean, _ = net.encode(x_test[:10], None if labels is None else labels[:10])
    recon = np.asarray(net.decode(mean, None if labels is None else labels[:10]))
    pngs = [_reconstruction_png(x_test[:10], recon, os.path.join(out, "reconstructions.png"),
                                f"{config['model']}: test images and reconstructions from μ")]
    samples, sample_labels = generate(config, net, 40, seed=1)
    titles = [config["class_names"][i] for i in sample_labels] if sample_labels is not None else [""] * 40
    pngs.append(plots.image_grid(samples, titles, os.path.join(out, "samples.png"),
                                 title=f"{config['model']}: decoder means for z ~ N(0, I)"))
    n = 15
    grid = vae_lib.manifold_grid(n, config["latent_dim"])
    grid_labels = np.full(len(grid), 0, np.int32) if net.num_classes else None
    manifold = np.asarray(net.decode(grid, grid_labels))
    height, width, channels = manifold.shape[1:]
    mosaic = manifold.reshape(n, n, height, width, channels).transpose(0, 2, 1, 3, 4).reshape(
        n * height, n * width, channels)  # one image: 225 matplotlib axes would be slow
    pngs.append(_save_mosaic(np.kron(mosaic, np.ones((2, 2, 1))), os.path.join(out, "manifold.png")))
    rows = []
    for i in range(4):
        a, b = mean[2 * i], mean[2 * i + 1]
        path = vae_lib.interpolate(a, b, 10)
        rows.append(np.asarray(net.decode(path, None if labels is None else np.full(10, labels[2 * i], np.int32))))
    pngs.append(plots.image_grid(np.concatenate(rows), [""] * 40, os.path.join(out, "interpolations.png"),
                                 columns=10, title="linear interpolation between two test images' μ"))
    _say(*pngs)
    return metrics


def _evaluate_gan(config, net, images, x_test, y_test, out):
    from apps.generative import gan as gan_lib

    samples, sample_labels = generate(config, net, 64, seed=1)
    titles = [config["class_names"][i] for i in sample_labels] if sample_labels is not None else [""] * 64
    pngs = [plots.image_grid(samples, titles, os.path.join(out, "samples.png"), title=f"{config['model']} samples")]
    rng = np.random.default_rng(2)
    rows = []
    for _ in range(4):
        path = np.linspace(0, 1, 10)[:, None] * rng.standard_normal(config["latent_dim"])[None]
        start = rng.standard_normal(config["latent_dim"])
        path = (path + (1 - np.linspace(0, 1, 10)[:, None]) * start[None]).astype(np.float32)
        rows.append(np.asarray(net.generate(path, np.zeros(10, np.int32) if net.num_classes else None)))
    pngs.append(plots.image_grid(np.concatenate(rows), [""] * 40, os.path.join(out, "interpolations.png"),
                                 columns=10, title="linear interpolation between random latents"))
    a, b, c = rng.standard_normal((3, config["latent_dim"])).astype(np.float32)
    arithmetic = gan_lib.latent_arithmetic(
        lambda z: np.asarray(net.generate(z, np.zeros(len(z), np.int32) if net.num_classes else None)), a, b, c)
    pngs.append(plots.image_grid(arithmetic, ["G(a)", "G(b)", "G(c)", "G(a - b + c)"],
                                 os.path.join(out, "latent_arithmetic.png"), columns=4, title="latent arithmetic"))
    _say(*pngs)
    return {}


def _evaluate_cyclegan(config, net, images, x_test, y_test, out):
    from apps.generative import cyclegan

    a_id, b_id = config["domains"]
    a, b = x_test[y_test == a_id], x_test[y_test == b_id]
    n = min(len(a), len(b))
    if n == 0:
        raise UserError("the test split has no images of one of the two domains; raise --limit")
    terms = net.evaluate(cyclegan.tf.data.Dataset.from_tensor_slices((a[:n], b[:n])).batch(200), verbose=0,
                         return_dict=True)
    fake_b, fake_a = np.asarray(net.g_ab.predict(a[:8], verbose=0)), np.asarray(net.g_ba.predict(b[:8], verbose=0))
    back_a, back_b = np.asarray(net.g_ba.predict(fake_b, verbose=0)), np.asarray(net.g_ab.predict(fake_a, verbose=0))
    names = config["class_names"]
    grid = np.concatenate([a[:8], fake_b, back_a, b[:8], fake_a, back_b])
    titles = ([names[a_id]] * 8 + [f"-> {names[b_id]}"] * 8 + ["cycled back"] * 8
              + [names[b_id]] * 8 + [f"-> {names[a_id]}"] * 8 + ["cycled back"] * 8)
    _say(plots.image_grid(np.clip(grid, 0, 1), titles, os.path.join(out, "translations.png"),
                          title=f"CycleGAN {names[a_id]} <-> {names[b_id]}"))
    print(f"cyclegan test: cycle loss {terms['cycle_loss']:.4f} (λ-weighted L1), identity {terms['identity_loss']:.4f}")
    return {"test_cycle_loss": terms["cycle_loss"], "test_identity_loss": terms["identity_loss"],
            "test_d_loss": terms["d_loss"]}


def _quality(config, net, x_test, y_test, num_samples, judge):
    """Judge scores of generated samples against test images (empty when no judge is trained)."""
    from apps.generative import quality

    directory = judge or quality.judge_dir(config["dataset"])
    if not os.path.exists(os.path.join(directory, training.MODEL_FILE)):
        print(f"note: no judge classifier in {directory}; run 'python -m apps.generative judge "
              f"--dataset {config['dataset']}' for the Fréchet distance, Inception-style score and mode coverage")
        return {}
    scorer = quality.load_judge(directory)
    if config["family"] == "cyclegan":
        a_id, b_id = config["domains"]
        a = x_test[y_test == a_id]
        _, probabilities = scorer(np.asarray(net.g_ab.predict(a, verbose=0)))
        share = float(np.mean(probabilities.argmax(axis=1) == b_id))
        print(f"judge: {100 * share:.1f}% of translated {config['class_names'][a_id]} images are classified "
              f"{config['class_names'][b_id]}")
        return {"translated_classified_as_target": share}
    if config["family"] == "autoencoder":
        return {}
    samples, _ = generate(config, net, min(num_samples, len(x_test)), seed=3)
    scores = quality.Judge.scores(scorer, samples, x_test[:len(samples)])
    print(f"judge scores ({scores['num_samples']} samples vs test images; a suite LeNet-5, not ImageNet FID): "
          f"Fréchet distance {scores['frechet_distance']:.2f}, Inception-style score {scores['inception_score']:.2f} "
          f"(real {scores['real_inception_score']:.2f}), classes covered {scores['modes_covered']}/"
          f"{scores['num_classes']}")
    return {"quality": scores}


# --------------------------------------------------------------------------
# sample, export, judge, pretrain


def sample(*, out=None, model="vae", num=64, label=None, seed=0, png=None):
    out = out or default_out(model)
    config, net = load_run(out)
    labels = None if label is None else np.full(num, label, np.int32)
    images, used = generate(config, net, num, labels, seed)
    titles = [config["class_names"][i] for i in used] if used is not None else [""] * num
    path = plots.image_grid(images, titles, png or os.path.join(out, f"samples_seed{seed}.png"),
                            title=f"{config['model']} samples (seed {seed})")
    _say(path)
    return path


def export_run(*, out=None, model="vae", export_dir="saved_models", version=None):
    """Export the decoder / generator: latent (and labels) -> images in [0, 1]."""
    out = out or default_out(model)
    config, net = load_run(out)
    generator, conditional = generator_of(config, net)
    rng = np.random.default_rng(0)
    if generator is None:  # CycleGAN: the A -> B translator
        images = data.load_dataset(config["dataset"], val_fraction=config["val_fraction"], seed=config["seed"],
                                   limit=config.get("limit"))
        x, _ = arrays(images.test, 32)
        model_to_export, inputs, names = net.g_ab, {"images": x}, ["images"]
        output = "translated"
    else:
        latent = rng.standard_normal((32, config["latent_dim"])).astype(np.float32)
        model_to_export, output = generator, "images"
        if conditional:
            inputs = {"latent": latent, "labels": (np.arange(32) % len(config["class_names"])).astype(np.int32)}
        else:
            inputs = {"latent": latent}
        names = list(inputs)
    report = export.export_model(model_to_export, os.path.join(export_dir, APP, config["model"]), input_names=names,
                                 output_names=[output], sample_inputs=inputs, version=version)
    print(f"wrote SavedModel {report['saved_model']} (signature '{export.SIGNATURE}': "
          f"{' + '.join(names)} -> {output})")
    for kind, path in report["tflite"].items():
        print(f"wrote TFLite {path} ({os.path.getsize(path) / 1024:.0f} KiB, "
              f"max |difference| vs SavedModel {report['max_abs_diff'][kind]:.2g})")
    return report


def judge(*, dataset="fashion_mnist", epochs=3, limit=None, out=None):
    from apps.generative import quality

    directory, report = quality.train_judge(dataset, out=out, epochs=epochs, limit=limit)
    print(f"judge classifier in {directory} (test accuracy {report['accuracy']:.4f})")
    return directory


def pretrain(*, dataset="fashion_mnist", limit=None, labels=500, sizes=(256, 64), epochs=3, finetune_epochs=3,
             classifier_epochs=30, seed=0, out=None):
    """The stacked-autoencoder pre-training experiment; writes metrics.json and the first layer's filters PNG."""
    from apps.generative import autoencoders

    out = out or os.path.join(ROOT, "pretrain")
    training.set_seed(seed)
    images = data.load_dataset(dataset, seed=seed, limit=limit)
    x_train, y_train = arrays(images.train)
    x_test, y_test = arrays(images.test)
    if labels > len(x_train):
        raise UserError(f"--labels {labels} is more than the {len(x_train)} training images")
    report = autoencoders.pretraining_experiment(
        x_train, x_train[:labels], y_train[:labels], x_test, y_test, images.num_classes, sizes=tuple(sizes),
        epochs=epochs, finetune_epochs=finetune_epochs, classifier_epochs=classifier_epochs, seed=seed)
    report.update(dataset=dataset, labels=labels, unlabelled=len(x_train), sizes=list(sizes))
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(f"with {labels} labels: pre-trained init {report['accuracy_pretrained']:.4f}, "
          f"random init {report['accuracy_random_init']:.4f} test accuracy")
    _say(os.path.join(out, "metrics.json"))
    return report
