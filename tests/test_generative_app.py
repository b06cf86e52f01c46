"""The generative app end to end: train, resume, evaluate, sample, export parity, the CLI's errors."""

import csv
import json
import os

import keras
import numpy as np
import pytest

from apps.generative import app
from apps.generative.__main__ import main
from apps.generative.config import TrainConfig
from core import export
from core.errors import UserError


def _history(run_dir):
    with open(os.path.join(run_dir, "history.csv")) as f:
        return list(csv.DictReader(f))


def _layers(model):
    for layer in model.layers:
        yield from (_layers(layer) if isinstance(layer, keras.Model) else [layer])


def rounding_bound(model, inputs):
    """How far two float32 evaluations of a decoder (Keras, SavedModel, TFLite) may differ, per output value.

    Each evaluation sums the same products in its own order (oneDNN or Eigen blocking, folded batch norm,
    XNNPACK), so each is within gamma_K * M of the exact value (Higham, Accuracy and Stability of Numerical
    Algorithms, ch. 3): M sums the absolute values of every term, K is the longest chain of sums (the
    layers' fan-ins, plus a few elementwise ops per layer). M comes from a twin of the model with |weights|,
    batch norm as (|x| + |mean|) |gamma| / sigma + |beta|, and a linear output, run on |latent|: ReLUs pass
    magnitudes on unchanged. The output squashing (sigmoid, or tanh then x0.5 + 0.5) has slope <= 1."""
    def linear_output(layer):
        config = layer.get_config()
        if config.get("activation") in ("sigmoid", "tanh"):
            config["activation"] = "linear"
        return type(layer).from_config(config)

    twin = keras.models.clone_model(model, clone_function=linear_output, recursive=True)
    twin.set_weights([-np.abs(w) if v.path.endswith("moving_mean") else w if v.path.endswith("moving_variance")
                      else np.abs(w) for v, w in zip(model.weights, model.get_weights())])
    magnitude = twin.predict({k: np.abs(v) if v.dtype.kind == "f" else v for k, v in inputs.items()}, verbose=0)
    chain = 0
    for layer in _layers(model):
        kernel = getattr(layer, "kernel", None)
        if kernel is not None:  # Dense (in, out); Conv2DTranspose (h, w, out, in): terms summed per output
            chain += kernel.shape[0] if len(kernel.shape) == 2 else kernel.shape[0] * kernel.shape[1] * kernel.shape[3]
        chain += 4
    u = np.finfo(np.float32).eps / 2
    return 2 * chain * u / (1 - chain * u) * magnitude  # two evaluations, each within gamma_K * M


def _untrained_vae_scores(x_test, y_test):
    from apps.generative import vae

    untrained = vae.build_vae((28, 28, 1), latent_dim=2)
    untrained.compile(optimizer=keras.optimizers.Adam())
    return untrained.evaluate(x_test, y_test, batch_size=500, verbose=0, return_dict=True)


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    """A tiny VAE run: one epoch on 512 Fashion-MNIST images (16 steps)."""
    out = str(tmp_path_factory.mktemp("vae_run") / "vae")
    app.train(TrainConfig(model="vae", dataset="fashion_mnist", epochs=1, batch_size=32, limit=512), run=out)
    return out


def test_vae_run_trains_evaluates_and_samples(vae_run, tmp_path):
    """The tiny VAE run already beats the untrained model's ELBO and reconstruction on the test images;
    evaluate's metrics, PNGs and samples."""
    from apps.generative.common import arrays
    from core import data

    out = vae_run
    metrics = app.evaluate(out, limit=100, num_samples=50, judge=str(tmp_path / "no_judge"))
    x_test, y_test = arrays(data.load_dataset("fashion_mnist", limit=100).test)
    untrained = _untrained_vae_scores(x_test, y_test)
    # One posterior sample per image makes the ELBO noisy by about a nat; 16 steps move it by over 100.
    assert metrics["test_negative_elbo"] < untrained["loss"] - 50, (metrics, untrained)
    assert metrics["test_reconstruction"] < untrained["reconstruction"] - 50, (metrics, untrained)
    assert metrics["test_kl"] > 0
    assert metrics["test_nll_importance_50"] < metrics["test_negative_elbo"] + 5
    with open(os.path.join(out, "metrics.json")) as f:
        assert json.load(f) == pytest.approx(metrics)
    for png in ("reconstructions.png", "samples.png", "manifold.png", "interpolations.png", "samples/epoch_001.png",
                "learning_curves.png"):
        assert os.path.getsize(os.path.join(out, png)) > 5_000, png
    assert os.path.getsize(app.sample(out, num=16)) > 5_000


def test_vae_run_exports_its_decoder_with_parity(vae_run, tmp_path):
    out = vae_run
    report = app.export_run(out, export_root=str(tmp_path / "exports"))  # raises if a TFLite file disagrees
    assert os.path.isfile(report["tflite"]["int8"])  # calibrated on other latents
    assert 0 <= report["max_abs_diff"]["int8"] <= export.TOLERANCES["int8"]  # every pixel
    _, net = app.load_run(out)
    latent = {"latent": np.random.default_rng(1).standard_normal((8, 2)).astype(np.float32)}
    expected = np.asarray(net.generator()(latent["latent"]))
    served = export.run_saved_model(report["saved_model"], latent)["images"]
    lite = export.run_tflite(report["tflite"]["float"], latent)["images"]
    bound = rounding_bound(net.generator(), latent)
    assert (np.abs(served - expected) <= bound).all() and (np.abs(lite - served) <= bound).all()
    assert np.abs(served - served[:1]).max() > 0.01  # different latents, different images


@pytest.mark.parametrize("model", ["cvae", "cgan"])
def test_conditional_decoder_exports_latent_and_label_with_parity(tmp_path, model):
    from apps.generative import gan, vae

    keras.utils.set_random_seed(0)
    if model == "cvae":
        decoder = vae.build_vae((28, 28, 1), latent_dim=2, num_classes=10).generator()
    else:  # the conditional DCGAN's generator: batch norm in inference mode, tanh rescaled to [0, 1]
        decoder = gan.build_gan("cgan", (28, 28, 1), latent_dim=2, num_classes=10).generator
    inputs = {"latent": np.repeat(np.random.default_rng(0).standard_normal((1, 2)).astype(np.float32), 4, axis=0),
              "labels": np.array([0, 1, 2, 3], np.int32)}
    calibration = [{"latent": np.random.default_rng(seed).standard_normal((10, 2)).astype(np.float32),
                    "labels": np.arange(10, dtype=np.int32)} for seed in (1, 2)]  # int8: labels stay int32
    report = export.export_model(decoder, str(tmp_path / "generative" / model), input_names=["latent", "labels"],
                                 output_names=["images"], sample_inputs=inputs, representative_data=calibration)
    assert report["max_abs_diff"]["float"] < 1e-4 and set(report["tflite"]) == {"float", "dynamic", "int8"}
    assert 0 <= report["max_abs_diff"]["int8"] <= export.TOLERANCES["int8"]
    served = export.run_saved_model(report["saved_model"], inputs)["images"]
    lite = export.run_tflite(report["tflite"]["float"], inputs)["images"]
    bound = rounding_bound(decoder, inputs)
    assert served.shape == (4, 28, 28, 1) and (np.abs(served - np.asarray(decoder(inputs))) <= bound).all()
    assert (np.abs(lite - served) <= bound).all()
    assert np.abs(served[0] - served[1]).max() > 1e-4  # the label reaches the exported decoder


class CrashAtEpoch(keras.callbacks.Callback):
    """Stands for a killed run: fails when epoch `epoch` (0-based) begins."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("simulated crash")


def test_gan_run_resumes_after_a_crash(tmp_path):
    out = str(tmp_path / "gan")
    config = TrainConfig(model="gan", dataset="fashion_mnist", epochs=2, batch_size=64, limit=256, latent_dim=16)
    with pytest.raises(RuntimeError, match="simulated crash"):
        app.train(config, run=out, callbacks=[CrashAtEpoch(1)])
    assert [row["epoch"] for row in _history(out)] == ["0"]
    first = os.path.getmtime(os.path.join(out, "samples", "epoch_001.png"))
    app.train(config, run=out)
    rows = _history(out)
    assert [row["epoch"] for row in rows] == ["0", "1"]  # resumed: only the second epoch ran again
    assert os.path.getmtime(os.path.join(out, "samples", "epoch_001.png")) == first
    assert all(np.isfinite(float(row["d_loss"])) for row in rows)
    assert os.path.getsize(os.path.join(out, "learning_curves.png")) > 5_000
    with pytest.raises(UserError, match="holds another run"):
        app.train(TrainConfig(model="dcgan", dataset="fashion_mnist", epochs=1, limit=64), run=out)


def test_gan_run_exports_its_generator_with_parity(tmp_path):
    """A one-step GAN run's generator as a SavedModel and TFLite files that compute what Keras computes."""
    out = str(tmp_path / "gan")
    app.train(TrainConfig(model="gan", dataset="fashion_mnist", epochs=1, batch_size=64, limit=64, latent_dim=16),
              run=out)
    report = app.export_run(out, export_root=str(tmp_path / "exports"))  # raises if a TFLite file disagrees
    assert report["saved_model"].startswith(str(tmp_path / "exports" / "generative_gan"))
    assert set(report["tflite"]) == {"float", "dynamic", "int8"}
    assert 0 <= report["max_abs_diff"]["int8"] <= export.TOLERANCES["int8"]
    _, net = app.load_run(out)
    latent = {"latent": np.random.default_rng(1).standard_normal((8, 16)).astype(np.float32)}
    served = export.run_saved_model(report["saved_model"], latent)["images"]
    lite = export.run_tflite(report["tflite"]["float"], latent)["images"]
    bound = rounding_bound(net.generator, latent)
    assert served.shape == (8, 28, 28, 1)
    assert (np.abs(served - np.asarray(net.generator(latent["latent"]))) <= bound).all()
    assert (np.abs(lite - served) <= bound).all()
    assert np.abs(served - served[:1]).max() > 0.01  # different latents, different images
    assert os.path.getsize(app.sample(out, num=16)) > 5_000


def test_cli_reports_user_errors_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["train", "--model", "nope"])
    assert stop.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err
    with pytest.raises(UserError, match="no training run"):
        main(["evaluate", "--run", str(tmp_path / "missing")])
    with pytest.raises(SystemExit):
        main(["train", "--model", "cyclegan", "--domains", "seven"])
    with pytest.raises(UserError, match="--domains needs two classes"):
        main(["train", "--model", "cyclegan", "--domains", "7", "--run", str(tmp_path / "c")])
    with pytest.raises(UserError, match="--domains: class 12"):
        main(["train", "--model", "cyclegan", "--domains", "7", "12", "--limit", "32", "--run", str(tmp_path / "c")])


@pytest.mark.parametrize("model, options, metric", [
    ("denoising_ae", dict(latent_dim=4), "denoised_mse_gaussian_0.3"),
    # ~30 s of CPU (its export converts two translators' worth of convolutions); the slow quality-table test
    # takes a CycleGAN run through the app too
    pytest.param("cyclegan", dict(domains=(1, 7), batch_size=4), "test_cycle_loss", marks=pytest.mark.slow),
])
def test_autoencoder_and_cyclegan_runs_evaluate_and_export(tmp_path, model, options, metric):
    """The two families without sampling from a prior, through the app: train, evaluate's metrics and PNGs, and
    the export of the decoder (latent -> image) or the A -> B translator (image -> image)."""
    out = str(tmp_path / model)
    app.train(TrainConfig(model=model, dataset="digits", epochs=1, limit=64, **options), run=out)
    metrics = app.evaluate(out, limit=100, num_samples=20, judge=str(tmp_path / "no_judge"))
    assert np.isfinite(metrics[metric]), metrics
    png = "denoising.png" if model == "denoising_ae" else "translations.png"
    assert os.path.getsize(os.path.join(out, png)) > 5_000
    report = app.export_run(out, export_root=str(tmp_path / "exports"))  # raises if a TFLite file disagrees
    assert report["saved_model"].startswith(str(tmp_path / "exports" / f"generative_{model}"))
    assert os.path.isfile(report["tflite"]["int8"])  # decoder: other latents; translator: other test images
    assert 0 <= report["max_abs_diff"]["int8"] <= export.TOLERANCES["int8"]
    # the signature the family's serving_model names (load_signature raises if it is another)
    inputs, outputs = (["images"], ["translated"]) if model == "cyclegan" else (["latent"], ["images"])
    export.load_signature(report["saved_model"], inputs=inputs, outputs=outputs, what=model)
