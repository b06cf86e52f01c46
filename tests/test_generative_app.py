"""The generative app end to end: train, resume, evaluate, sample, export parity, the CLI's errors."""

import csv
import json
import os

import keras
import numpy as np
import pytest

from apps.generative import app
from apps.generative.__main__ import main
from core import export
from core.errors import UserError


def _history(run_dir):
    with open(os.path.join(run_dir, "history.csv")) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # about 30 s on an idle 2-core machine, minutes on a loaded one
def test_vae_run_trains_evaluates_and_samples(tmp_path):
    out = str(tmp_path / "vae")
    app.train(model="vae", dataset="fashion_mnist", epochs=1, batch_size=64, limit=256, out=out)
    metrics = app.evaluate(out=out, limit=100, num_samples=50, judge=str(tmp_path / "no_judge"))
    assert metrics["test_negative_elbo"] > 0 and metrics["test_kl"] > 0
    assert metrics["test_nll_importance_50"] < metrics["test_negative_elbo"] + 5
    with open(os.path.join(out, "metrics.json")) as f:
        assert json.load(f) == pytest.approx(metrics)
    for png in ("reconstructions.png", "samples.png", "manifold.png", "interpolations.png", "samples/epoch_001.png",
                "learning_curves.png"):
        assert os.path.getsize(os.path.join(out, png)) > 5_000, png
    assert os.path.getsize(app.sample(out=out, num=16)) > 5_000


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
    report = export.export_model(decoder, str(tmp_path / "generative" / model), input_names=["latent", "labels"],
                                 output_names=["images"], sample_inputs=inputs)
    assert report["max_abs_diff"]["float"] < 1e-4 and set(report["tflite"]) == {"float", "dynamic"}
    served = export.run_saved_model(report["saved_model"], inputs)["images"]
    lite = export.run_tflite(report["tflite"]["float"], inputs)["images"]
    assert served.shape == (4, 28, 28, 1) and 0 <= served.min() and served.max() <= 1
    np.testing.assert_allclose(lite, served, atol=1e-4)
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
    options = dict(model="gan", dataset="fashion_mnist", epochs=2, batch_size=64, limit=256, latent_dim=16, out=out)
    with pytest.raises(RuntimeError, match="simulated crash"):
        app.train(**options, callbacks=[CrashAtEpoch(1)])
    assert [row["epoch"] for row in _history(out)] == ["0"]
    first = os.path.getmtime(os.path.join(out, "samples", "epoch_001.png"))
    app.train(**options)
    rows = _history(out)
    assert [row["epoch"] for row in rows] == ["0", "1"]  # resumed: only the second epoch ran again
    assert os.path.getmtime(os.path.join(out, "samples", "epoch_001.png")) == first
    assert all(np.isfinite(float(row["d_loss"])) for row in rows)
    assert os.path.getsize(os.path.join(out, "learning_curves.png")) > 5_000
    with pytest.raises(UserError, match="holds another run"):
        app.train(model="dcgan", dataset="fashion_mnist", epochs=1, limit=64, out=out)


@pytest.mark.slow
def test_gan_run_exports_its_generator_with_parity(tmp_path):
    out = str(tmp_path / "gan")
    app.train(model="gan", dataset="fashion_mnist", epochs=1, batch_size=64, limit=128, latent_dim=16, out=out)
    report = app.export_run(out=out, export_dir=str(tmp_path / "exports"))
    assert report["max_abs_diff"]["float"] < 1e-4 and report["max_abs_diff"]["dynamic"] < 0.1
    assert os.path.getsize(app.sample(out=out, num=16)) > 5_000


def test_cli_reports_user_errors_in_one_line(tmp_path, capsys):
    with pytest.raises(UserError, match="unknown model 'nope'"):
        main(["train", "--model", "nope"])
    with pytest.raises(UserError, match="no training run"):
        main(["evaluate", "--out", str(tmp_path / "missing")])
    with pytest.raises(SystemExit):
        main(["train", "--model", "cyclegan", "--domains", "seven"])
    with pytest.raises(UserError, match="--domains: class 12"):
        main(["train", "--model", "cyclegan", "--domains", "7,12", "--limit", "32", "--out", str(tmp_path / "c")])
