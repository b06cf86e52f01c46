"""Every training flag of the classify app changes what it should: optimizers, learning-rate schedules,
initializers, weight decay, dropout/DropConnect, batch norm, label smoothing, keras-cv augmentation,
early stopping, class weights and over/under-sampling of an imbalanced training set."""

import csv
import dataclasses
import json
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from apps.classify import app, budgets, recipes
from apps.classify.__main__ import main, parse_args, train_config
from apps.classify.models import build_model
from core import data
from core.errors import UserError
from layers import DropConnect


def tiny_mlp():
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(5, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="probabilities")(hidden))


def batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6)).astype("float32"), keras.ops.one_hot(rng.integers(0, 4, n), 4)


def all_layers(model):
    return list(model._flatten_layers(include_self=False, recursive=True))


def test_every_flag_reaches_train():
    args = parse_args(
        ["train", "--optimizer", "nesterov", "--momentum", "0.8", "--lr-schedule", "cosine", "--warmup-epochs", "1",
         "--lr-step-epochs", "3", "--lr-gamma", "0.5", "--init", "he", "--l1", "1e-5", "--l2", "1e-4",
         "--dropout", "0.3", "--dropconnect", "0.2", "--no-batchnorm", "--width", "0.5", "--label-smoothing", "0.1",
         "--augment", "flip,mixup", "--imbalance", "0.1", "--resample", "over", "--class-weight", "balanced",
         "--aux-weight", "0.2", "--coarse-weight", "0.5", "--patience", "2"]
    )
    config = train_config(args)
    assert config == dataclasses.replace(
        config,
        optimizer="nesterov",
        momentum=0.8,
        lr_schedule="cosine",
        warmup_epochs=1.0,
        lr_step_epochs=3.0,
        lr_gamma=0.5,
        init="he",
        l1=1e-5,
        l2=1e-4,
        dropout=0.3,
        dropconnect=0.2,
        batchnorm=False,
        width=0.5,
        label_smoothing=0.1,
        augment="flip,mixup",
        imbalance=0.1,
        resample="over",
        class_weight="balanced",
        aux_weight=0.2,
        coarse_weight=0.5,
        patience=2,
    )
    assert config.model == budgets.DEFAULT_MODEL and config.epochs == budgets.budget(budgets.DEFAULT_MODEL)["epochs"]


@pytest.mark.parametrize(
    "name,cls,extra",
    [
        ("sgd", keras.optimizers.SGD, dict(momentum=0.0, nesterov=False)),
        ("momentum", keras.optimizers.SGD, dict(momentum=0.9, nesterov=False)),
        ("nesterov", keras.optimizers.SGD, dict(momentum=0.9, nesterov=True)),
        ("adagrad", keras.optimizers.Adagrad, {}),
        ("rmsprop", keras.optimizers.RMSprop, {}),
        ("adam", keras.optimizers.Adam, dict(amsgrad=False)),
        ("amsgrad", keras.optimizers.Adam, dict(amsgrad=True)),
    ],
)
def test_optimizer_flag_picks_the_optimizer(name, cls, extra):
    optimizer = recipes.make_optimizer(name, 0.01)
    assert type(optimizer) is cls
    for key, value in extra.items():
        assert getattr(optimizer, key) == value


def test_optimizers_differ_in_their_first_step():
    """One step on the same gradient: SGD moves by lr*g, Adam by about lr*sign(g)."""
    steps = {}
    for name in ("sgd", "adam"):
        w = keras.Variable(np.array([1.0, 1.0], "float32"))
        recipes.make_optimizer(name, 0.1).apply_gradients([(tf.constant([0.5, -2.0]), w)])
        steps[name] = 1.0 - w.numpy()
    np.testing.assert_allclose(steps["sgd"], [0.05, -0.2], rtol=1e-5)
    np.testing.assert_allclose(steps["adam"], [0.1, -0.1], rtol=1e-3)


def schedule_formula(k, base, kind, total, warmup, step_size, gamma):
    if k < warmup:
        return base * (k + 1) / warmup
    t = k - warmup
    if kind == "step":
        return base * gamma ** (t // step_size)
    if kind == "cosine":
        span = total - warmup
        return base * 0.5 * (1 + math.cos(math.pi * min(t, span) / span))
    return base


@pytest.mark.parametrize("kind", ["constant", "step", "cosine"])
def test_learning_rate_at_step_k_follows_the_schedule(kind):
    # 5 steps per epoch, 4 epochs, 1 warm-up epoch, a step drop every 1 epoch by 0.5.
    spec = dict(base=0.1, kind=kind, total=20, warmup=5, step_size=5, gamma=0.5)
    model = tiny_mlp()
    app.compile_model(
        model,
        optimizer="momentum",
        learning_rate=0.1,
        lr_schedule=kind,
        warmup_epochs=1,
        lr_step_epochs=1,
        lr_gamma=0.5,
        steps_per_epoch=5,
        epochs=4,
    )
    schedule = model.optimizer._learning_rate
    for k in [0, 2, 4, 5, 9, 10, 14, 17, 19, 25]:
        assert float(schedule(k)) == pytest.approx(schedule_formula(k, **spec), rel=1e-5), (kind, k)
    x, y = batch()
    for _ in range(7):  # the optimizer itself: after 7 updates it uses the rate of step 7
        model.train_on_batch(x, y)
    assert float(model.optimizer.learning_rate) == pytest.approx(schedule_formula(7, **spec), rel=1e-5)


@pytest.mark.parametrize("init,variance", [("xavier", lambda fi, fo: 2 / (fi + fo)), ("he", lambda fi, fo: 2 / fi)])
def test_initializer_sets_every_kernels_variance(init, variance):
    model = build_model("resnet", (28, 28, 1), 10)  # its convs (inside ResidualBlock too) start He normal
    recipes.apply_initializer(model, init)
    conv = model.get_layer("stage2_block1").convs[1].kernel  # inside a layers/ block: 3x3x32x32
    dense = model.get_layer("probabilities").kernel  # 64 x 10
    for kernel, fan_in, fan_out in [(conv, 9 * 32, 9 * 32), (dense, 64, 10)]:
        assert np.var(kernel.numpy()) == pytest.approx(variance(fan_in, fan_out), rel=0.15), (init, kernel.path)
    if init == "xavier":  # uniform: bounded by sqrt(6 / (fan_in + fan_out))
        assert np.abs(dense.numpy()).max() <= math.sqrt(6 / 74) + 1e-6


def test_l1_and_l2_add_their_penalty_to_the_loss():
    x, y = batch()
    model = tiny_mlp()
    app.compile_model(model)
    plain = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    recipes.apply_weight_decay(model, l1=0.01, l2=0.1)
    kernels = [model.layers[1].kernel.numpy(), model.layers[2].kernel.numpy()]
    penalty = sum(0.01 * np.abs(k).sum() + 0.1 * (k**2).sum() for k in kernels)
    assert float(sum(model.losses)) == pytest.approx(penalty, rel=1e-5)
    model.compile(optimizer="sgd", loss=model.loss)  # recompile: the loss now includes the penalty
    assert model.evaluate(x, y, verbose=0, return_dict=True)["loss"] == pytest.approx(plain + penalty, rel=1e-5)
    assert penalty > 0.05


def test_dropout_dropconnect_and_batchnorm_flags_change_the_model():
    x = np.random.default_rng(0).uniform(0, 255, (4, 28, 28, 1)).astype("float32")
    with_dropconnect = build_model("resnet", (28, 28, 1), 10, dropout=0.5, dropconnect=0.5, width=0.25)
    layer = with_dropconnect.get_layer("dropconnect")
    assert isinstance(layer, DropConnect) and layer.rate == 0.5
    assert with_dropconnect.get_layer("dropout").rate == 0.5
    np.testing.assert_allclose(with_dropconnect(x, training=False), with_dropconnect(x, training=False))
    assert np.abs(with_dropconnect(x, training=True) - with_dropconnect(x, training=True)).max() > 1e-4
    assert build_model("vgg", (28, 28, 1), 10, dropout=0.25).get_layer("dropout").rate == 0.25

    def batchnorms(model):
        return sum(isinstance(l, keras.layers.BatchNormalization) for l in all_layers(model))

    for name in ("resnet", "densenet", "vgg"):
        assert batchnorms(build_model(name, (28, 28, 1), 10, width=0.25)) > 0
        assert batchnorms(build_model(name, (28, 28, 1), 10, width=0.25, batchnorm=False)) == 0
    assert batchnorms(build_model("lenet5", (28, 28, 1), 10, batchnorm=True)) == 2


def test_label_smoothing_changes_the_loss_per_formula():
    x, y = batch()
    model = tiny_mlp()
    p = model.predict(x, verbose=0)
    for eps in (0.0, 0.2):
        app.compile_model(model, label_smoothing=eps)
        target = (1 - eps) * np.asarray(y) + eps / 4
        want = float(np.mean(-(target * np.log(p)).sum(axis=1)))
        assert model.evaluate(x, y, verbose=0, return_dict=True)["loss"] == pytest.approx(want, rel=1e-4)


@pytest.mark.parametrize("name", recipes.AUGMENTATIONS)
def test_augmentation_keeps_shapes_and_changes_pixels(name):
    images = tf.constant(np.random.default_rng(0).uniform(0, 255, (16, 28, 28, 1)).astype("float32"))
    labels = tf.one_hot(np.arange(16) % 10, 10)
    augment = recipes.make_augmenter([name], (28, 28, 1), seed=3)
    ds = tf.data.Dataset.from_tensors((images, labels)).map(augment)  # on the tf.data pipeline
    out_images, out_labels = next(iter(ds))
    assert out_images.shape == images.shape and out_labels.shape == labels.shape
    changed = np.abs(out_images.numpy() - images.numpy()).reshape(16, -1).max(axis=1) > 1e-3
    assert changed.sum() >= 4, name
    assert out_images.numpy().min() >= -1e-3 and out_images.numpy().max() <= 255 + 1e-3
    np.testing.assert_allclose(out_labels.numpy().sum(axis=1), 1.0, rtol=1e-5)
    soft = (out_labels.numpy().max(axis=1) < 1 - 1e-6).any()
    assert soft == (name in ("mixup", "cutmix"))  # only the mixers blend the labels


def test_imbalance_gives_the_stated_class_counts_and_resampling_evens_them():
    labels = np.repeat(np.arange(4), [100, 120, 80, 100])
    counts = recipes.imbalanced_counts([100, 120, 80, 100], 0.1)
    np.testing.assert_array_equal(counts, [100, int(120 * 0.1 ** (1 / 3)), int(80 * 0.1 ** (2 / 3)), 10])
    for resample, want in [("none", counts), ("over", [100] * 4), ("under", [10] * 4)]:
        order = recipes.rebalance_indices(labels, 4, imbalance=0.1, resample=resample, seed=0)
        np.testing.assert_array_equal(np.bincount(labels[order], minlength=4), want)
    imbalanced = recipes.rebalance_indices(labels, 4, imbalance=0.1)
    assert set(np.flatnonzero(labels == 3)[:10]) == set(imbalanced[labels[imbalanced] == 3])  # the first ones


def test_class_weights_follow_the_formula_and_weight_the_examples():
    labels = np.array([0] * 6 + [1] * 3 + [2] * 1)
    weights = recipes.class_weights(labels, 4)
    np.testing.assert_allclose(weights, [10 / (4 * 6), 10 / (4 * 3), 10 / (4 * 1), 0.0])
    fn = recipes.make_batch_fn(4, ["probabilities"], weights=weights)
    _, targets, sample_weights = fn(tf.zeros((3, 2, 2, 1)), tf.constant([0, 2, 1]))
    np.testing.assert_allclose(sample_weights, [weights[0], weights[2], weights[1]])
    np.testing.assert_allclose(targets, np.eye(4)[[0, 2, 1]])


def test_imbalanced_training_run_with_resampling_and_class_weights(tmp_path, capsys):
    """The CLI end to end on sklearn digits: --imbalance 0.1 --resample under --class-weight balanced."""
    out = str(tmp_path / "run")
    main(
        [
            "train",
            "--model",
            "mlp",
            "--dataset",
            "digits",
            "--epochs",
            "1",
            "--batch-size",
            "64",
            "--imbalance",
            "0.1",
            "--resample",
            "under",
            "--class-weight",
            "balanced",
            "--optimizer",
            "rmsprop",
            "--init",
            "xavier",
            "--run",
            out,
        ]
    )
    printed = capsys.readouterr().out
    images = data.load_dataset("digits")
    counts = np.bincount(np.concatenate([y for _, y in images.train.batch(2000).as_numpy_iterator()]), minlength=10)
    smallest = recipes.imbalanced_counts(counts, 0.1).min()
    assert f"({10 * smallest} examples" in printed  # under-sampled: every class cut to the rarest
    assert "class weights: " + ", ".join(["1.00"] * 10) in printed  # balanced data: equal weights
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["imbalance"] == 0.1 and config["optimizer"] == "rmsprop" and config["init"] == "xavier"


def test_early_stopping_stops_when_the_validation_loss_stalls(tmp_path):
    """SGD with learning rate 0: the validation loss (on the split carved from training data) never
    improves, so --patience 1 stops after 2 of 6 epochs."""
    out = str(tmp_path / "run")
    main(
        [
            "train",
            "--model",
            "lenet5",
            "--dataset",
            "digits",
            "--epochs",
            "6",
            "--batch-size",
            "128",
            "--optimizer",
            "sgd",
            "--learning-rate",
            "0",
            "--patience",
            "1",
            "--run",
            out,
        ]
    )
    with open(os.path.join(out, "history.csv")) as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == [0, 1]


def test_bad_trick_values_are_user_errors(tmp_path):
    for kwargs, message in [
        (dict(optimizer="adamw"), "unknown optimizer 'adamw'"),
        (dict(lr_schedule="linear"), "unknown learning-rate schedule"),
        (dict(augment="flip,rotate"), "unknown augmentation 'rotate'"),
        (dict(imbalance=1.5), "--imbalance must be in"),
        (dict(resample="smote"), "unknown resampling 'smote'"),
    ]:
        with pytest.raises(UserError, match=message):
            app.train(model="mlp", dataset="digits", run=str(tmp_path), **kwargs)
