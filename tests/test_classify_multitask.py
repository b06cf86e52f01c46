"""Beyond single-task training: multi-task learning with a coarse Fashion-MNIST head (hard parameter
sharing, weighted loss) and an ensemble that averages trained models."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from apps.classify import app, recipes
from apps.classify.__main__ import main
from apps.classify.models import build_model
from core import export, training
from core.errors import UserError


def test_coarse_targets_follow_the_fine_labels():
    m = recipes.coarse_matrix(recipes.FASHION_COARSE, 4)
    fn = recipes.make_batch_fn(10, ["probabilities", "coarse_probabilities"], coarse=m)
    _, targets = fn(tf.zeros((5, 2, 2, 1)), tf.constant([0, 1, 5, 8, 9]))  # T-shirt, Trouser, Sandal, Bag, Boot
    np.testing.assert_array_equal(targets["coarse_probabilities"], np.eye(4)[[0, 1, 2, 3, 2]])
    np.testing.assert_array_equal(targets["probabilities"], np.eye(10)[[0, 1, 5, 8, 9]])
    soft = tf.constant([[0.7, 0.3] + [0.0] * 8])  # a mixup label: 0.7 T-shirt + 0.3 Trouser
    np.testing.assert_allclose(tf.matmul(soft, m), [[0.7, 0.3, 0.0, 0.0]])


def test_multitask_loss_is_the_weighted_sum_and_the_second_head_shares_the_backbone():
    net = app.add_coarse_head(build_model("resnet", (28, 28, 1), 10, width=0.25), 4)
    assert net.output_names == ["probabilities", "coarse_probabilities"]
    assert net.get_layer("coarse_probabilities").input is net.get_layer("probabilities").input  # shared features
    app.compile_model(net, coarse_weight=0.5)
    x = np.random.default_rng(0).uniform(0, 255, (8, 28, 28, 1)).astype("float32")
    labels = np.arange(8) % 10
    _, targets = recipes.make_batch_fn(10, net.output_names, coarse=recipes.coarse_matrix(recipes.FASHION_COARSE, 4))(
        x, labels)
    result = net.evaluate(x, targets, return_dict=True, verbose=0)
    fine, coarse = net.predict(x, verbose=0)
    ce = lambda y, p: float(keras.losses.categorical_crossentropy(y, p).numpy().mean())
    want = ce(targets["probabilities"], fine) + 0.5 * ce(targets["coarse_probabilities"], coarse)
    assert result["loss"] == pytest.approx(want, rel=1e-4)


def test_multitask_training_run_evaluates_and_exports_the_main_head(tmp_path):
    out = str(tmp_path / "mt")
    main(["train", "--model", "lenet5", "--dataset", "fashion_mnist", "--limit", "300", "--epochs", "1",
          "--batch-size", "64", "--coarse-weight", "0.5", "--run", out])
    assert training.load_trained_model(out).output_names == ["probabilities", "coarse_probabilities"]
    assert app.evaluate(out, limit=100)["confusion_matrix"].shape == (10, 10)
    with pytest.raises(UserError, match="needs --dataset fashion_mnist"):
        app.train(model="mlp", dataset="digits", coarse_weight=0.5, run=str(tmp_path / "x"))


def test_ensemble_averages_the_members_and_exports(tmp_path):
    runs = []
    for i, model in enumerate(["mlp", "lenet5"]):
        runs.append(str(tmp_path / model))
        app.train(model=model, dataset="digits", epochs=1, batch_size=64, limit=300, seed=i, run=runs[-1])
    out = str(tmp_path / "ensemble")
    main(["ensemble", *runs, "--run", out])
    net = training.load_trained_model(out)
    x = np.random.default_rng(0).uniform(0, 255, (6, 28, 28, 1)).astype("float32")
    members = [training.load_trained_model(r).predict(x, verbose=0) for r in runs]
    np.testing.assert_allclose(net.predict(x, verbose=0), np.mean(members, axis=0), atol=1e-6)
    assert app.evaluate(out, limit=200)["accuracy"] > 0.2
    exported = app.export_run(out, export_dir=str(tmp_path / "exports"))
    served = export.run_saved_model(exported["saved_model"], {"images": x})["probabilities"]
    np.testing.assert_allclose(served, net.predict(x, verbose=0), atol=1e-5)
    # saved_models/classify_<model>: the ensemble's name made a TF Serving model name
    assert exported["saved_model"] == str(tmp_path / "exports" / "classify_ensemble_mlp_lenet5" / "1")
    with pytest.raises(UserError, match="at least two runs"):
        app.ensemble(runs[:1], run=str(tmp_path / "e1"))
    other = str(tmp_path / "mnist")
    app.train(model="mlp", dataset="mnist5k", epochs=1, limit=100, run=other)
    with pytest.raises(UserError, match="same dataset"):
        app.ensemble([runs[0], other], run=str(tmp_path / "e2"))
