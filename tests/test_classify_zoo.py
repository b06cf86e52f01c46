"""The CNN zoo: every model builds for 28x28 gray and 32x32 colour images, trains a step, keeps the
images -> probabilities contract; architecture facts per model; export parity for a representative few."""

import keras
import numpy as np
import pytest

from apps.classify import app
from apps.classify.config import MODEL_NAMES
from apps.classify.models import MODELS, LocalResponseNormalization, build_model, count_params, main_head
from core import export
from layers import (
    DenseBlock,
    InceptionBlock,
    NiNBlock,
    ResidualBlock,
    ResNeXtBlock,
    SqueezeExcitation,
    StochasticDepth,
    TransitionLayer,
)

ZOO = ["lenet5", "alexnet", "vgg", "nin", "googlenet", "resnet", "resnet_bottleneck", "resnet_preact",
       "wide_resnet", "resnext", "densenet", "se_resnet", "resnet_sd"]
TINY = 0.125  # channel multiplier that keeps the tests fast


def pixels(shape, n=4, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, *shape)).astype("float32")


def logits(head, x):
    """The input of the final softmax. An untrained network can saturate the softmax on random pixels
    (pre-activation ResNet: probabilities of exactly 0 and 1), where a real change in the logits leaves
    the probabilities unchanged to float precision."""
    output = head.get_layer("probabilities")
    features = keras.Model(head.input, output.input)(x).numpy()
    if isinstance(output, keras.layers.Dense):  # Dense(softmax): apply the affine part ourselves
        kernel, bias = (w.numpy() for w in output.weights)
        return features @ kernel + bias
    return features  # Activation("softmax"): its input is the logits


def all_layers(model):
    return list(model._flatten_layers(include_self=False, recursive=True))


def test_cli_model_list_matches_the_registry():
    assert set(MODEL_NAMES) == set(MODELS.names()) and set(ZOO) <= set(MODELS.names())


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_builds_for_both_sizes_and_trains_one_step(name):
    for shape in [(28, 28, 1), (32, 32, 3)]:
        model = build_model(name, shape, 10, width=TINY)
        assert model.inputs[0].name == "images" and model.output_names[0] == "probabilities"
        probabilities = main_head(model)(pixels(shape)).numpy()
        assert probabilities.shape == (4, 10)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    # One real optimizer step on the colour model: a finite loss, the classifier moves, the output changes.
    app.compile_model(model, optimizer="sgd", learning_rate=0.1)
    model.run_eagerly = True  # one step: tracing a graph would cost more than the step
    x = pixels(shape)
    head = main_head(model)
    classifier = [layer for layer in head.layers if layer.weights][-1]  # NiN: the 1x1 class-map conv
    before, kernel = logits(head, x), classifier.weights[0].numpy().copy()
    y = keras.ops.one_hot(np.arange(4) % 10, 10)
    targets = {n: y for n in model.output_names} if len(model.outputs) > 1 else y
    loss = model.train_on_batch(x, targets)
    loss = loss[0] if isinstance(loss, list) else loss
    assert np.isfinite(loss)
    assert not np.allclose(kernel, classifier.weights[0].numpy())
    assert np.abs(logits(head, x) - before).max() > 1e-6


def test_models_are_built_from_the_suite_blocks():
    uses = {"nin": NiNBlock, "googlenet": InceptionBlock, "resnet_bottleneck": ResidualBlock,
            "resnext": ResNeXtBlock, "densenet": DenseBlock, "se_resnet": SqueezeExcitation,
            "resnet_sd": StochasticDepth, "alexnet": LocalResponseNormalization}
    for name, block in uses.items():
        model = build_model(name, (28, 28, 1), 10, width=TINY)
        assert any(isinstance(layer, block) for layer in model.layers), name
    densenet = build_model("densenet", (28, 28, 1), 10, width=TINY)
    assert sum(isinstance(layer, TransitionLayer) for layer in densenet.layers) == 2
    bottleneck = [l for l in build_model("resnet_bottleneck", (28, 28, 1), 10).layers if isinstance(l, ResidualBlock)]
    assert all(l.bottleneck for l in bottleneck) and bottleneck[-1].out_channels == 4 * 64
    assert all(l.preactivation for l in build_model("resnet_preact", (28, 28, 1), 10).layers
               if isinstance(l, ResidualBlock))
    wide = [l for l in build_model("wide_resnet", (28, 28, 1), 10).layers if isinstance(l, ResidualBlock)]
    assert [l.filters for l in wide] == [64, 128, 256]  # WRN-10-4: 16k, 32k, 64k with k = 4
    resnext = [l for l in build_model("resnext", (28, 28, 1), 10).layers if isinstance(l, ResNeXtBlock)]
    assert all(l.cardinality == 8 for l in resnext)
    nin = build_model("nin", (28, 28, 1), 10)
    assert not any(isinstance(l, keras.layers.Dense) for l in nin.layers)  # global average pooling instead
    assert nin.get_layer("class_maps").output.shape[-1] == 10


def test_parameter_counts_grow_with_width():
    assert count_params(build_model("resnet", (28, 28, 1), 10)) == 77_754
    assert count_params(build_model("vgg", (28, 28, 1), 10, width=0.5)) < count_params(
        build_model("vgg", (28, 28, 1), 10))


def test_googlenet_aux_heads_add_weighted_loss_and_are_dropped_for_inference():
    model = build_model("googlenet", (32, 32, 3), 10, width=TINY)
    assert model.output_names == ["probabilities", "aux1_probabilities", "aux2_probabilities"]
    app.compile_model(model, aux_weight=0.3)
    x, y = pixels((32, 32, 3), 8), keras.ops.one_hot(np.arange(8) % 10, 10)
    result = model.evaluate(x, {n: y for n in model.output_names}, return_dict=True, verbose=0)
    outputs = model.predict(x, verbose=0)
    ce = [float(keras.losses.categorical_crossentropy(y, o).numpy().mean()) for o in outputs]
    assert result["loss"] == pytest.approx(ce[0] + 0.3 * (ce[1] + ce[2]), rel=1e-4)
    inference = main_head(model)
    assert len(inference.outputs) == 1
    np.testing.assert_allclose(inference.predict(x, verbose=0), outputs[0], atol=1e-6)


def test_stochastic_depth_survival_decays_linearly():
    model = build_model("resnet_sd", (28, 28, 1), 10, width=TINY)
    survival = [l.survival_probability for l in model.layers if isinstance(l, StochasticDepth)]
    droppable = 3 * 3 - 2  # identity blocks: 3 stages x 3 blocks, less the two downsampling blocks
    np.testing.assert_allclose(survival, [1 - (i + 1) / droppable * 0.5 for i in range(droppable)])
    x = pixels((28, 28, 1))
    np.testing.assert_allclose(model(x, training=False), model(x, training=False))  # inference: deterministic


def test_local_response_normalization_matches_the_papers_formula():
    a = np.random.default_rng(0).normal(size=(2, 3, 3, 7)).astype("float32") * 10
    got = LocalResponseNormalization()(a).numpy()
    k, n, alpha, beta = 2.0, 5, 1e-4, 0.75
    want = np.empty_like(a)
    for c in range(7):
        lo, hi = max(0, c - n // 2), min(7, c + n // 2 + 1)
        want[..., c] = a[..., c] / (k + alpha * (a[..., lo:hi] ** 2).sum(-1)) ** beta
    np.testing.assert_allclose(got, want, rtol=1e-5)


# Slow: the residual variants made of blocks whose TFLite parity test_layers_blocks checks (bottleneck,
# pre-activation) or of resnet's own blocks wider; `pytest -m slow` exports them too.
SAME_BLOCKS_AS_TESTED = {"resnet_bottleneck", "resnet_preact", "wide_resnet"}


@pytest.mark.parametrize("name,shape", [pytest.param(name, [(28, 28, 1), (32, 32, 3)][i % 2],
                                                     marks=[pytest.mark.slow] if name in SAME_BLOCKS_AS_TESTED else [])
                                        for i, name in enumerate(["mlp", *ZOO])])
def test_every_model_exports_with_tflite_parity(name, shape, tmp_path):
    """Every model (gray and colour inputs alternately) through the app's export path: SavedModel
    `images -> probabilities` and a float TFLite file that agree with Keras (GoogLeNet: auxiliary
    heads dropped; AlexNet: LRN; ResNeXt: grouped convs; stochastic depth: identity at inference).
    (`app.export_run` on a trained run, with all three TFLite kinds, is tested in test_classify.py.)"""
    model = main_head(build_model(name, shape, 10, width=TINY))
    sample = {"images": pixels(shape, 8, seed=1)}
    saved = str(tmp_path / "1")
    export.export_saved_model(model, saved, ["images"], ["probabilities"])
    served = export.run_saved_model(saved, sample)
    assert set(served) == {"probabilities"}  # the auxiliary heads are not exported
    np.testing.assert_allclose(served["probabilities"], model.predict(sample["images"], verbose=0), atol=1e-5)
    export.convert_to_tflite(saved, str(tmp_path / "float.tflite"))
    tflite = export.run_tflite(str(tmp_path / "float.tflite"), sample)["probabilities"]
    assert np.abs(tflite - served["probabilities"]).max() <= export.TOLERANCES["float"]
