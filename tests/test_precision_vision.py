"""--precision mixed_bfloat16 --jit through the real `train` of classify, segment and detect: the run learns, its
layers compute in bfloat16 on float32 variables, config.json records the flags, and evaluate and export still
work with float32 signatures (the export's clients never see bfloat16).

`make test` checks every classify, segment and detect model's float32 outputs and float16 loss scaling (the
bfloat16 training of the other apps is tests/test_precision_apps.py's); the three app runs here are marked `slow`
(`pytest -m slow`): emulated bfloat16, XLA compiles and a scene build took them 35-270 s on a 2-core CPU beside
the rest of the suite, which has 20 minutes in all."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from core import export, precision, scenes, training

FLAGS = ["--precision", "mixed_bfloat16", "--jit"]


def check_reduced_precision(run_dir, output_layers, jit=True):
    """The saved model computes in bfloat16 (its conv and dense layers) on float32 variables, its `output_layers`
    in float32; config.json records the flags."""
    with open(os.path.join(run_dir, "config.json")) as f:
        recorded = json.load(f)
    assert (recorded["precision"], recorded["jit"]) == ("mixed_bfloat16", jit)
    model = training.load_trained_model(run_dir)
    layers = [layer for layer in model._flatten_layers() if isinstance(layer, (keras.layers.Conv2D,
                                                                                keras.layers.Dense))]
    reduced = [layer.name for layer in layers if layer.compute_dtype == "bfloat16"]
    assert len(reduced) >= len(layers) - len(output_layers) > 0, [(x.name, x.compute_dtype) for x in layers]
    assert {v.dtype for v in model.weights} == {"float32"}
    for name in output_layers:
        assert model.get_layer(name).compute_dtype == "float32"
    assert all(t.dtype == "float32" for t in tf.nest.flatten(model.outputs))
    return recorded


def assert_loss_falls(run_dir):
    import csv

    with open(os.path.join(run_dir, "history.csv")) as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    assert np.isfinite(losses).all() and losses[-1] < losses[0], losses


def check_float32_export(report):
    """The SavedModel signature's and the float TFLite file's inputs and outputs: no bfloat16 or float16."""
    loaded, signature = export.load_signature(report["saved_model"])
    specs = [*signature.structured_input_signature[1].values(), *signature.structured_outputs.values()]
    assert [s.dtype for s in specs if s.dtype.is_floating] and all(s.dtype == tf.float32 for s in specs
                                                                   if s.dtype.is_floating), specs
    runner = export.tflite_signature_runner(report["tflite"]["float"])
    details = [*runner.get_input_details().values(), *runner.get_output_details().values()]
    assert all(d["dtype"] in (np.float32, np.int32) for d in details), details


@pytest.fixture(autouse=True)
def float32_afterwards():
    yield
    assert keras.config.dtype_policy().name == "float32"  # `train` restored the global policy


@pytest.mark.slow  # see the module docstring
def test_classify_trains_evaluates_and_exports_in_mixed_bfloat16(tmp_path):
    from apps.classify import app
    from apps.classify.__main__ import main, parse_args, train_config

    run = str(tmp_path / "run")
    main(["train", "--model", "lenet5", "--dataset", "digits", "--limit", "400", "--epochs", "3", "--batch-size",
          "32", *FLAGS, "--run", run])
    check_reduced_precision(run, ["probabilities"])
    rerun = train_config(parse_args(["train", "--config", os.path.join(run, "config.json")]))
    assert (rerun.precision, rerun.jit) == ("mixed_bfloat16", True)
    report = app.evaluate(run)
    assert report["accuracy"] > 0.5  # 10 classes: chance is 0.1
    check_float32_export(app.export_run(run, export_dir=str(tmp_path / "exports")))


def test_every_model_has_float32_outputs_and_loss_scaling_under_mixed_float16():
    """Keras' compile wraps the optimizer in a LossScaleOptimizer when the model's own policy is mixed_float16:
    every app model is a functional model built inside `precision.policy`, so it has that policy."""
    from apps.classify.app import compile_model
    from apps.classify.models import MODELS, build_model
    from apps.detect.models import MODELS as DETECTORS
    from apps.segment.models import MODELS as SEGMENTERS
    from apps.segment.models import build_model as build_segmenter

    builders = {f"classify {name}": lambda name=name: build_model(name, (28, 28, 1), 10, **(
        {} if name == "mlp" else dict(width=0.125))) for name in MODELS.names()}
    builders.update({f"segment {name}": lambda name=name: build_segmenter(name, (32, 32, 1), 3, width=0.25)
                     for name in SEGMENTERS.names()})
    builders.update({f"detect {name}": lambda name=name: DETECTORS.get(name).build(64, 3)
                     for name in DETECTORS.names()})
    for what, build in builders.items():
        with precision.policy("mixed_float16"):
            net = build()
        assert net.dtype_policy.name == "mixed_float16", what
        assert all(t.dtype == "float32" for t in tf.nest.flatten(net.outputs)), what
        net.compile(optimizer="adam", loss="mse")
        assert isinstance(net.optimizer, keras.optimizers.LossScaleOptimizer), what
    with precision.policy("mixed_float16"):
        net = builders["classify lenet5"]()
    assert isinstance(compile_model(net).optimizer, keras.optimizers.LossScaleOptimizer)  # the app's own compile


SEGMENT_SCENES = "fashion_mnist_64_small"


@pytest.mark.slow  # see the module docstring
def test_segment_trains_evaluates_and_exports_in_mixed_bfloat16(tmp_path):
    from apps.segment import app
    from apps.segment.__main__ import main

    data_dir, run = str(tmp_path / "tfds"), str(tmp_path / "run")
    main(["train", "--model", "fcn", "--dataset", SEGMENT_SCENES, "--data-dir", data_dir, "--limit", "64",
          "--epochs", "2", *FLAGS, "--run", run])
    check_reduced_precision(run, ["probabilities"])
    assert_loss_falls(run)
    report = app.evaluate(run, limit=16)
    assert report["model"]["pixel_accuracy"] > 0.5
    check_float32_export(app.export_run(run, export_dir=str(tmp_path / "exports"), num_samples=4))


# XLA compiles the detector's training and validation steps in ~30 s on an idle 2-core CPU (the first epoch took
# 107 s on a busy one): with --jit it is a slow test; the --jit of the other two apps runs in every test run.
@pytest.mark.slow  # see the module docstring
@pytest.mark.parametrize("jit", [False, True])
def test_detect_trains_evaluates_and_exports_in_mixed_bfloat16(tmp_path, jit):
    from apps.detect import app
    from apps.detect.config import TrainConfig

    spec = scenes.SceneSpec(size=64, max_objects=3, min_scale=0.8, max_scale=1.4, clutter=3)
    data = {split: scenes.generate(spec, split, count=count, seed=0)
            for split, count in (("train", 64), ("validation", 16), ("test", 8))}
    names = list(scenes.class_names("fashion_mnist"))
    run = str(tmp_path / "run")
    config = TrainConfig(model="ssd", epochs=2, batch_size=16, learning_rate=3e-3, mirror=False,
                         precision="mixed_bfloat16", jit=jit)
    app.train(config, run_dir=run, class_names=names, scenes={k: data[k] for k in ("train", "validation")})
    check_reduced_precision(run, ["anchors"], jit=jit)
    assert_loss_falls(run)
    report = app.evaluate(run, scenes=data["test"])
    assert np.isfinite(report["map50"])
    check_float32_export(app.export_run(run, export_dir=str(tmp_path / "exports"), sample_images=data["test"]["image"]))
