"""Transfer learning: a backbone trained on Fashion-MNIST, reused on MNIST digits as a frozen feature
extractor with a new head, and fine-tuned (all layers or only the top ones); the result evaluates like
any run."""

import json
import os

import numpy as np
import pytest

from apps.classify import app
from apps.classify.__main__ import main
from core import training
from core.errors import UserError


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("fashion_backbone"))
    app.train(model="lenet5", dataset="fashion_mnist", epochs=1, batch_size=64, limit=1500, run=out)
    return out


def weights_of(model):
    return {v.path: v.numpy().copy() for v in model.weights}


def test_frozen_feature_extractor_trains_only_the_new_head(backbone, tmp_path):
    source = app.feature_extractor(training.load_trained_model(backbone))
    out = str(tmp_path / "feature")
    main(["transfer", "--backbone", backbone, "--dataset", "mnist5k", "--mode", "feature", "--epochs", "3",
          "--batch-size", "64", "--learning-rate", "0.01", "--limit", "800", "--run", out])
    net = training.load_trained_model(out)
    base = net.get_layer("backbone")
    for layer in source.layers:  # the backbone is unchanged: exactly the Fashion-MNIST weights
        for a, b in zip(layer.weights, base.get_layer(layer.name).weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert net.get_layer("probabilities").kernel.shape == (84, 10)  # LeNet-5's f6 features -> 10 digits
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["backbone_dataset"] == "fashion_mnist" and config["dataset"] == "mnist5k"
    report = app.evaluate(out, limit=400)
    assert report["accuracy"] > 0.4  # chance 0.1: Fashion-MNIST features carry over to digits
    # (export of a model nesting trained models is checked on the ensemble in test_classify_multitask.py)


def test_fine_tuning_the_top_layers_changes_only_those(backbone, tmp_path):
    source = weights_of(app.feature_extractor(training.load_trained_model(backbone)))
    net = app.transfer(backbone=backbone, dataset="digits", mode="finetune", fine_tune_layers=2, epochs=1,
                       batch_size=64, learning_rate=1e-3, limit=300, run=str(tmp_path / "top2"))
    base = net.get_layer("backbone")
    changed = {layer.name for layer in base.layers
               if any(not np.array_equal(source[v.path], v.numpy()) for v in layer.weights)}
    assert changed == {"c5", "f6"}  # the two top layers with weights; c1 and c3 stay frozen
    whole = app.transfer(backbone=backbone, dataset="digits", mode="finetune", epochs=1, batch_size=64, limit=300,
                         run=str(tmp_path / "all"))
    assert any(
        not np.array_equal(source[v.path], v.numpy()) for v in whole.get_layer("backbone").get_layer("c1").weights
    )

    with pytest.raises(UserError, match="unknown transfer mode 'linear'"):
        app.transfer(backbone=backbone, mode="linear", run=str(tmp_path / "x"))
    with pytest.raises(UserError, match="no training run in"):
        app.transfer(backbone=str(tmp_path / "nothing"), run=str(tmp_path / "y"))
