"""The segment app end to end: models, SegNet indices, U-Net skips, learning, export parity, CLI errors."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from apps.segment import app
from apps.segment.__main__ import main
from apps.segment.models import MODELS, build_model
from core.errors import UserError, run_cli

SMALL = "fashion_mnist_64_small"   # 64x64 scenes, 512/128/128, built once in a temporary data_dir


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("scenes_tfds"))
    app.load_split(SMALL, "test", directory, 1)   # builds the tfds dataset (~15 s)
    return directory


@pytest.fixture(scope="module")
def trained_run(data_dir, tmp_path_factory):
    """An FCN trained briefly on 256 small scenes, and the same FCN untrained, evaluated alike."""
    run_dir = str(tmp_path_factory.mktemp("fcn_run"))
    app.train(model="fcn", dataset=SMALL, data_dir=data_dir, epochs=3, batch_size=16, limit=256, out=run_dir)
    return run_dir


@pytest.mark.parametrize("name", ["fcn", "segnet", "unet"])
def test_each_model_gives_per_pixel_probabilities_and_trains(name):
    model = build_model(name, (16, 16, 1), 5, width=0.5)
    assert model.inputs[0].name == "images" and model.output_names == ["probabilities"]
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (2, 16, 16, 1)).astype("float32")
    probabilities = model(images).numpy()
    assert probabilities.shape == (2, 16, 16, 5)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, rtol=1e-5)
    # Two eager training steps on one batch (no traced train function: fast) lower its loss.
    targets = np.eye(5, dtype="float32")[rng.integers(0, 5, (2, 16, 16))]
    loss_fn, optimizer = keras.losses.CategoricalCrossentropy(), keras.optimizers.Adam(1e-2)
    losses = []
    for _ in range(3):
        with tf.GradientTape() as tape:
            loss = loss_fn(targets, model(images, training=True))
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        losses.append(float(loss))
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_models_reject_sides_that_three_poolings_cannot_halve():
    with pytest.raises(UserError, match="multiple of 8, got 30x30"):
        build_model("unet", (30, 30, 1), 3)
    with pytest.raises(UserError, match="unknown model 'deeplab'; choose one of: dilated, fcn, segnet, unet"):
        MODELS.get("deeplab")


def test_segnet_unpooling_puts_values_at_the_encoders_argmax_positions():
    model = build_model("segnet", (16, 16, 1), 3, width=0.5)
    encoder = model.get_layer("enc1b_relu").output    # what pool1 pools
    probe = keras.Model(model.inputs, [encoder, model.get_layer("unpool1").output])
    features, unpooled = (t.numpy() for t in probe([np.random.default_rng(1).uniform(0, 255, (2, 16, 16, 1))
                                                    .astype("float32")]))
    b, h, w, c = features.shape
    windows = features.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h // 2, w // 2, 4, c)
    first_max = windows.argmax(axis=3)                   # row-major first maximum, as MaxPoolingWithArgmax2D
    placed = unpooled.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h // 2, w // 2, 4, c)
    nonzero = placed != 0
    assert nonzero.any()
    assert (nonzero.sum(axis=3) <= 1).all()              # one value per window, the rest zero
    at = np.take_along_axis(nonzero, first_max[:, :, :, None, :], axis=3)[:, :, :, 0, :]
    assert (nonzero.any(axis=3) <= at).all()             # ... and exactly where the encoder's maximum was
    # The indices come from the encoder: the unpooling layer reads pool1's second output.
    assert model.get_layer("unpool1").input[1] is model.get_layer("pool1").output[1]


def test_unet_concatenates_the_encoder_features_into_the_decoder():
    model = build_model("unet", (16, 16, 1), 3)           # 16-32-64 channels
    for level, channels in zip((1, 2, 3), (16, 32, 64)):
        skip = model.get_layer(f"skip{level}")
        assert isinstance(skip, keras.layers.Concatenate)
        assert skip.input[1] is model.get_layer(f"down{level}b_relu").output
        assert isinstance(model.get_layer(f"up{level}"), keras.layers.Conv2DTranspose)
        assert skip.output.shape[-1] == 2 * channels      # upsampled decoder + same-size encoder features
    # FCN's skip links add the scores of the finer pooling layers.
    fcn = build_model("fcn", (16, 16, 1), 3)
    assert fcn.get_layer("fuse_pool1").input[1] is fcn.get_layer("score_pool1").output


def test_short_training_beats_the_untrained_model_and_all_background(trained_run, data_dir, tmp_path):
    config_names = app.class_names(SMALL)
    untrained = build_model("fcn", (64, 64, 1), len(config_names))
    test = app.load_split(SMALL, "test", data_dir)
    before = app.metrics.segmentation_report(app.confusion_over(untrained, test, len(config_names)))
    result = app.evaluate(out=trained_run, data_dir=data_dir)
    after, baseline = result["model"], result["all_background"]
    assert result["confusion_matrix"].sum() == 128 * 64 * 64
    assert after["mean_iou"] > before["mean_iou"] + 0.04
    assert after["mean_iou"] > baseline["mean_iou"] + 0.03
    assert after["pixel_accuracy"] > baseline["pixel_accuracy"]
    for png in ("confusion_matrix.png", "test_predictions.png", "learning_curves.png"):
        assert os.path.getsize(os.path.join(trained_run, png)) > 10_000


def test_export_parity_and_the_served_mask_is_the_argmax(trained_run, data_dir, tmp_path):
    report = app.export_run(out=trained_run, export_dir=str(tmp_path), data_dir=data_dir, num_samples=8)
    assert report["max_abs_diff"]["float"] <= 1e-4 and report["keras_vs_saved_model"] <= 1e-5
    assert [report["parity"][kind]["mask_unexplained_flips"] for kind in ("float", "dynamic")] == [0, 0]
    assert report["parity"]["float"]["mask_agreement"] > 0.999
    images = np.stack([x for x, _ in app.load_split(SMALL, "test", data_dir, 12).skip(8).as_numpy_iterator()])
    served = app.export.run_saved_model(report["saved_model"], {"images": images})
    lite = app.export.run_tflite(report["tflite"]["float"], {"images": images})  # scenes the check did not see
    np.testing.assert_array_equal(served["mask"], served["probabilities"].argmax(axis=-1))
    np.testing.assert_allclose(lite["probabilities"], served["probabilities"], atol=1e-4)
    with open(os.path.join(report["saved_model"], "assets.extra", "labels.txt")) as f:
        assert f.read().split("\n")[:2] == ["background", "T-shirt/top"]


def test_predict_writes_overlays_of_files_and_of_test_scenes(trained_run, data_dir, tmp_path, capsys):
    scene = next(app.load_split(SMALL, "test", data_dir, 1).as_numpy_iterator())[0]
    path = str(tmp_path / "scene.png")
    Image.fromarray(scene[..., 0].astype(np.uint8)).save(path)
    masks = app.predict([path], out=trained_run, png=str(tmp_path / "files.png"))
    assert masks.shape == (1, 64, 64)
    app.predict([], out=trained_run, count=3, data_dir=data_dir, png=str(tmp_path / "scenes.png"))
    printed = capsys.readouterr().out
    assert f"wrote {tmp_path / 'files.png'}" in printed and "test scene 2" in printed
    assert os.path.getsize(tmp_path / "scenes.png") > os.path.getsize(tmp_path / "files.png") > 5_000


def test_bad_inputs_give_one_line_errors(trained_run, tmp_path, capsys):
    small = str(tmp_path / "small.png")
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(small)
    cases = [
        (["train", "--model", "deeplab"], "unknown model 'deeplab'"),
        (["train", "--loss", "hinge"], "unknown loss 'hinge'"),
        (["train", "--dataset", "coco"], "unknown scene dataset 'coco'"),
        (["predict", "--out", trained_run, str(tmp_path / "missing.png")], "image not found"),
        (["predict", "--out", trained_run, small], "is 12x10 pixels, the model expects 64x64"),
        (["evaluate", "--out", str(tmp_path / "nothing")], "no training run"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            run_cli(main, argv, prog="apps.segment")
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("apps.segment: error: ") and message in err and "\n" not in err, err


def test_preview_writes_scenes_masks_and_boxes(data_dir, tmp_path):
    path = app.preview(dataset=SMALL, split="validation", count=4, data_dir=data_dir, png=str(tmp_path / "p.png"))
    assert os.path.getsize(path) > 10_000
    assert tf.io.gfile.exists(path)
