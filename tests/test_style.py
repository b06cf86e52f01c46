"""apps.style: Gatys style transfer and the fast stylizer, on real skimage photos, offline features."""

import os

import numpy as np
import pytest
import tensorflow as tf

from apps.style import app, stylizer
from apps.style.__main__ import main
from apps.style.config import StylizerConfig, TransferConfig
from apps.style.features import build_extractor
from core import export
from core.errors import UserError
from losses import style_loss


def test_random_features_tell_textures_apart():
    """Gram statistics of the random multi-scale CNN: two crops of one texture
    are closer than crops of two different textures."""
    extractor = build_extractor("random")
    brick = app.load_image("brick", 128)
    gravel = app.load_image("gravel", 128)
    crops = np.stack([brick[:48, :48], brick[64:112, 64:112], gravel[:48, :48]])
    features = extractor(tf.constant(crops))
    for name in extractor.style_layers:
        f = features[name]
        same = float(style_loss(f[0:1], f[1:2])[0])
        different = float(style_loss(f[0:1], f[2:3])[0])
        assert same < different, name


def test_style_transfer_lowers_the_style_plus_content_loss(tmp_path):
    result = app.transfer(TransferConfig(size=48, steps=40), run=str(tmp_path), log_every=40)
    first, last = result["history"][0], result["history"][-1]
    assert first["content"] == 0  # it starts from the content image
    assert sum(last.values()) < 0.2 * sum(first.values())
    assert last["style"] < 0.1 * first["style"]
    image = result["image"]
    assert image.shape == (48, 48, 3) and image.min() >= 0 and image.max() <= 255
    assert np.abs(image - result["content_image"]).mean() > 5  # it changed ...
    assert np.corrcoef(image.ravel(), result["content_image"].ravel())[0, 1] > 0.3  # ... and kept the content
    assert os.path.getsize(result["png"]) > 20_000 and os.path.exists(result["result_png"])


def test_fast_stylizer_learns_and_exports_to_savedmodel_and_tflite(tmp_path):
    run = str(tmp_path / "run")
    result = stylizer.train(StylizerConfig(steps=30, size=32, batch_size=2), run=run, log_every=15)
    losses = [sum(v for k, v in h.items() if k != "step") for h in result["history"]]
    assert losses[-1] < 0.7 * losses[0]
    report = stylizer.export_run(run=run, export_dir=str(tmp_path / "exp"), kinds=("float",))
    assert report["saved_model"] == str(tmp_path / "exp" / "style_fast" / "1")
    assert os.path.exists(os.path.join(report["saved_model"], "saved_model.pb"))
    assert report["max_abs_diff"]["float"] < 0.05  # pixels in [0, 255]
    assert os.path.isfile(report["tflite"]["int8"])  # calibrated on training crops
    assert 0 <= report["max_abs_diff"]["int8"] <= stylizer.INT8_TOLERANCE  # grey levels
    sample = np.random.default_rng(0).uniform(0, 255, (1, 128, 128, 3)).astype(np.float32)
    out = export.run_saved_model(report["saved_model"], {"images": sample})["stylized"]
    assert out.shape == (1, 128, 128, 3) and 0 <= out.min() and out.max() <= 255
    assert os.path.getsize(result["png"]) > 20_000


def test_style_errors_are_one_line(tmp_path):
    with pytest.raises(UserError, match="needs --weights"):
        build_extractor("vgg19")
    with pytest.raises(UserError, match="VGG19 weights not found"):
        build_extractor("vgg19", str(tmp_path / "missing.h5"))
    with pytest.raises(UserError, match="image not found: nosuch.*astronaut"):
        app.load_image("nosuch", 64)


def test_style_cli_writes_pngs(tmp_path, capsys):
    main(["transfer", "--content", "astronaut", "--style", "hubble_deep_field", "--size", "32", "--steps", "5",
          "--run", str(tmp_path)])
    printed = capsys.readouterr().out
    grid = os.path.join(tmp_path, "astronaut_hubble_deep_field_random_grid.png")
    assert f"wrote {grid}" in printed and os.path.getsize(grid) > 10_000


def test_the_subpixel_twin_computes_the_transposed_stylizer_and_converts_without_transpose_conv(tmp_path):
    import keras

    keras.utils.set_random_seed(3)
    net = app.build_stylizer()
    rng = np.random.default_rng(3)
    for layer in net.layers:  # weights with every tap and bias in play, at a scale that keeps the sigmoid unsaturated
        layer.set_weights([rng.normal(0, 0.5 / np.sqrt(np.prod(w.shape[:-1])), w.shape).astype(np.float32)
                           for w in layer.get_weights()])
    twin = app.subpixel_twin(net, (20, 28, 3))
    images = rng.uniform(0, 255, (3, 20, 28, 3)).astype(np.float32)
    reference, got = net(images).numpy(), twin(images).numpy()
    # the same sums in another order: float32 rounding of ~1e3 terms per pixel, on outputs of scale 255
    assert reference.std() > 1 and np.abs(got - reference).max() < 255 * 1e-4
    for name in ("up1", "up2"):   # the fine grid itself, before the sigmoid flattens differences
        fine = keras.Model(net.input, net.get_layer(name).output)(images).numpy()
        fine_twin = keras.Model(twin.input, twin.get_layer(f"{name}_to_space").output)(images).numpy()
        assert np.abs(fine_twin - fine).max() <= 1e-5 * np.abs(fine).max() + 1e-6

    saved = export.export_saved_model(twin, str(tmp_path / "1"), ["images"], ["stylized"])
    path = export.convert_to_tflite(saved, str(tmp_path / "float.tflite"))
    runner = export.tflite_signature_runner(path)
    np.testing.assert_allclose(runner(images=images[:1])["stylized"], got[:1], atol=255 * 1e-4)
    ops = {op["op_name"] for op in runner._interpreter._get_ops_details()}
    assert "DEPTH_TO_SPACE" in ops and "TRANSPOSE_CONV" not in ops
