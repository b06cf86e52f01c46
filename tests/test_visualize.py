"""apps.visualize: inspection and gradient methods on real trained models.

LeNet-5 trained for one epoch on Fashion-MNIST (a classify run folder) and a
toy square-vs-cross model whose class depends only on where the object is.
"""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_visualize_support import classify_run, toy_classifier

from apps.visualize import common, gradients, inspect, toy
from apps.visualize.__main__ import main
from core import export
from core.errors import UserError


@pytest.fixture(scope="module")
def lenet():
    return common.load_classifier(classify_run())


@pytest.fixture(scope="module")
def toy_model():
    return toy_classifier()


@pytest.fixture(scope="module")
def toy_images():
    x, y, corners = toy.shapes(16, seed=1)
    return x, y, corners


def _object_mask(corner, size=32, object_size=8, margin=0):
    mask = np.zeros((size, size), bool)
    top, left = corner
    mask[max(0, top - margin):top + object_size + margin, max(0, left - margin):left + object_size + margin] = True
    return mask


def test_saliency_equals_the_class_score_gradient_computed_independently(lenet):
    x, _ = common.test_examples(lenet, 4)
    targets = np.array([0, 3, 7, 9])
    # y_c rebuilt by hand: penultimate features times the last Dense kernel, plus bias.
    model = lenet.model
    last = model.layers[-1]
    features = keras.Model(model.inputs[0], last.input)
    kernel, bias = (w.numpy() for w in last.weights)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        scores = tf.matmul(features(xt), kernel) + bias
        chosen = tf.reduce_sum(scores * tf.one_hot(targets, scores.shape[-1]))
    expected = np.abs(tape.gradient(chosen, xt).numpy()).max(axis=-1)
    got = gradients.saliency(lenet, x, targets)
    assert got.shape == (4, 28, 28)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)
    assert got.max() > 0


@pytest.mark.parametrize("kind", ["guided", "deconvnet"])
def test_modified_relu_backward_rules_hold_inside_the_network(lenet, kind):
    """At LeNet's c3 (conv + ReLU), the gradient reaching the pre-activation z
    is the incoming gradient g masked by g > 0 (both rules) and by z > 0 (guided)."""
    copy, swapped, _ = gradients.modified_relu_model(lenet.model, kind)
    assert swapped >= 4  # c1, c3, c5, f6
    scores = common.logits_model(copy)
    c3 = copy.get_layer("c3")
    head = keras.Model(copy.inputs[0], copy.get_layer("s2").output)
    tail = keras.Model(c3.output, scores.output)
    x, _ = common.test_examples(lenet, 2)
    z = tf.nn.bias_add(tf.nn.conv2d(head(x), c3.kernel, 1, "VALID"), c3.bias)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(z)
        a = c3.activation(z)
        y = tf.reduce_sum(tail(a)[:, 2])
    g_z, g_a = tape.gradient(y, z).numpy(), tape.gradient(y, a).numpy()
    mask = g_a > 0
    if kind == "guided":
        mask &= z.numpy() > 0
    np.testing.assert_allclose(g_z, g_a * mask, atol=1e-7)
    assert np.all(g_z[g_a < 0] == 0) and (g_a < 0).any()
    if kind == "guided":
        assert np.all(g_z[z.numpy() < 0] == 0) and (z.numpy() < 0).any()
    np.testing.assert_allclose(np.asarray(a), np.maximum(z, 0), atol=1e-6)  # the forward pass is a plain ReLU
    # The copy shares the weights; the original keeps plain ReLU gradients.
    np.testing.assert_allclose(copy(x).numpy(), lenet.model(x).numpy(), atol=1e-6)
    plain = gradients.class_score_gradient(lenet.model, x, [2, 2])
    modified = gradients.class_score_gradient(copy, x, [2, 2])
    assert not np.allclose(plain, modified)


def test_gradcam_is_non_negative_and_peaks_on_the_object(toy_model, toy_images):
    x, y, corners = toy_images
    assert np.mean(toy_model.predict(x).argmax(axis=1) == y) >= 0.95
    cams, layer = gradients.grad_cam(toy_model, x, y)
    assert layer == "conv2" and cams.shape == (16, 32, 32)
    assert cams.min() >= 0
    for cam, corner in zip(cams, corners):
        mask = _object_mask(corner)
        assert mask[np.unravel_index(cam.argmax(), cam.shape)]
        assert cam[mask].mean() > 3 * cam[~mask].mean()


def test_occlusion_drop_is_largest_where_the_object_is(toy_model, toy_images):
    x, y, corners = toy_images
    drops, base = inspect.occlusion_map(toy_model, x[:8], y[:8], patch=6, stride=2)
    assert drops.shape == (8, 32, 32) and np.all(base > 0.5)
    for drop, corner in zip(drops, corners[:8]):
        peak = np.unravel_index(drop.argmax(), drop.shape)
        assert _object_mask(corner, margin=3)[peak]  # a patch half over the object hides it too
        inside, far = drop[_object_mask(corner)].mean(), drop[~_object_mask(corner, margin=6)].mean()
        assert inside > 0.03 and inside > 3 * abs(far)


def test_gradient_cli_writes_titled_pngs(lenet, tmp_path, capsys):
    run = classify_run()
    main(["gradients", "--run", run, "--figures", str(tmp_path), "--count", "3"])
    printed = capsys.readouterr().out
    for name in ("saliency", "deconvnet", "guided", "gradcam", "gradients"):
        png = os.path.join(tmp_path, f"{name}.png")
        assert f"wrote {png}" in printed
        assert os.path.getsize(png) > 15_000


def test_inspection_cli_methods_write_pngs(tmp_path, capsys):
    run = classify_run()
    for argv in (["architecture"], ["curves"], ["kernels"], ["activations", "--layer", "c1", "--count", "1"],
                 ["occlusion", "--count", "2", "--stride", "4"],
                 ["top-images", "--layer", "c3", "--channel", "5", "--pool", "300"]):
        main(argv + ["--run", run, "--figures", str(tmp_path)])
    printed = capsys.readouterr().out
    folder = str(tmp_path)
    for png in ("architecture.png", "training_curves.png", "kernels_c1.png", "activations_c1.png", "occlusion.png",
                "top_images_c3_5.png"):
        assert f"wrote {os.path.join(folder, png)}" in printed
        assert os.path.getsize(os.path.join(folder, png)) > 8_000, png


def test_kernels_and_top_images_are_the_real_ones(lenet, tmp_path):
    result = inspect.kernels(lenet, str(tmp_path))
    np.testing.assert_array_equal(result["kernels"], lenet.model.get_layer("c1").kernel.numpy())
    top = inspect.top_images(lenet, "c3", 1, count=5, pool=200, figures=str(tmp_path))
    best = top["scores"][top["indices"]]
    assert np.all(np.diff(best) <= 0) and best[0] == top["scores"].max()


def test_architecture_text_fallback_names_every_layer(lenet, tmp_path, capsys):
    result = inspect.architecture(lenet, str(tmp_path), renderer="text")
    assert result["renderer"] == "text" and os.path.getsize(result["png"]) > 8_000
    text = open(result["txt"]).read()
    assert all(layer.name in text for layer in lenet.model.layers)
    assert "wrote the text summary instead" in capsys.readouterr().out


def test_unknown_layer_and_class_are_one_line_errors(lenet, tmp_path):
    with pytest.raises(UserError, match="no layer named 'conv9'.*c1, .*c3"):
        inspect.activations(lenet, "conv9", np.zeros((1, 28, 28, 1), np.float32), figures=str(tmp_path))
    with pytest.raises(UserError, match="unknown class 'Cat'"):
        common.target_classes(lenet, np.zeros((1, 28, 28, 1)), "Cat")
    with pytest.raises(UserError, match="classifier not found"):
        common.load_classifier(str(tmp_path / "missing"))


def test_exported_savedmodel_supports_the_output_methods(lenet, tmp_path):
    folder = str(tmp_path / "classify" / "1")
    export.export_saved_model(lenet.model, folder, ["images"], ["probabilities"])
    os.makedirs(os.path.join(folder, "assets.extra"))
    with open(os.path.join(folder, "assets.extra", "labels.txt"), "w") as f:
        f.write("\n".join(lenet.class_names) + "\n")
    saved = common.load_classifier(folder)
    assert saved.model is None and saved.class_names == lenet.class_names and saved.image_shape == (28, 28, 1)
    x, _ = common.test_examples(lenet, 3)
    np.testing.assert_allclose(saved.predict(x), lenet.predict(x), atol=1e-5)
    # d log p_c / dx from the SavedModel equals the Keras model's.
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        chosen = tf.reduce_sum(tf.math.log(lenet.model(xt))[:, 4])
    expected = np.abs(tape.gradient(chosen, xt).numpy()).max(axis=-1)
    np.testing.assert_allclose(gradients.saliency(saved, x, [4, 4, 4]), expected, rtol=1e-3, atol=1e-6)
    with pytest.raises(UserError, match="pass the training run folder"):
        gradients.grad_cam(saved, x, [4, 4, 4])
