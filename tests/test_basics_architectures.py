"""The basics app, architectures: the degradation problem of deep plain nets and what residual connections do
about it (He et al. 2016), and the AlexNet layer-removal ablation (Krizhevsky et al. 2012, Zeiler & Fergus 2014).
Each test asserts the effect the notes describe, with margins taken from runs over several seeds."""

import os

import numpy as np

# --- degradation: plain vs residual -------------------------------------------------------------------------

def test_zero_gamma_residual_block_starts_as_the_identity_and_round_trips():
    import keras

    from apps.basics.degradation import FullyConnectedBlock

    x = np.abs(np.random.default_rng(0).normal(size=(16, 8))).astype(np.float32)  # after a ReLU: x ≥ 0
    block = FullyConnectedBlock(8, residual=True, zero_gamma=True)
    np.testing.assert_array_equal(block(x, training=True).numpy(), x)  # relu(x + 0·x̂ + 0) = x, exactly
    plain = FullyConnectedBlock(8, residual=False, zero_gamma=False)
    assert np.abs(plain(x, training=True).numpy() - x).max() > 0.5  # a plain block must learn the identity
    clone = FullyConnectedBlock.from_config(block.get_config())
    assert (clone.width, clone.residual, clone.zero_gamma) == (8, True, True)
    assert keras.saving.get_registered_object("basics>FullyConnectedBlock") is FullyConnectedBlock


def test_deeper_plain_net_trains_worse_and_the_residual_one_does_not(tmp_path, capsys):
    from apps.basics import degradation

    result = degradation.run(folder=str(tmp_path), small=True, seed=0)  # digits, depths 4 and 16, 5 epochs
    r = result["results"]
    plain_shallow, residual_shallow, plain_deep, residual_deep = (
        r[name] for name in ("plain 4", "residual 4", "plain 16", "residual 16"))
    assert plain_deep["params"] == residual_deep["params"]  # the shortcut adds no weights
    # Measured over seeds 0, 1, 2 (training-set loss | accuracy, inference mode): plain 4 0.041 0.033 0.039 |
    # ≥ 0.990; residual 4 0.068 0.061 0.065; plain 16 0.570 0.419 0.339 | 0.814 0.891 0.898; residual 16 0.037
    # 0.034 0.043 | ≥ 0.993. The deeper plain net is worse on the TRAINING set, not only on held-out data ...
    assert plain_deep["train_loss"] > 5 * plain_shallow["train_loss"], (plain_deep, plain_shallow)
    assert plain_deep["train_accuracy"] < plain_shallow["train_accuracy"] - 0.05
    # ... and the same depth with shortcuts trains at least as well as either shallow net
    assert residual_deep["train_loss"] <= residual_shallow["train_loss"]
    assert residual_deep["train_loss"] < 1.5 * plain_shallow["train_loss"]
    assert residual_deep["train_loss"] < plain_deep["train_loss"] / 5
    assert residual_deep["train_accuracy"] >= plain_shallow["train_accuracy"] - 0.005
    png, = result["pngs"]
    assert png.startswith(str(tmp_path)) and os.path.getsize(png) > 10_000
    assert "first-step ‖g‖" in capsys.readouterr().out


# --- ablation: layers removed from an AlexNet-style convnet -------------------------------------------------

def test_alexnet_variants_drop_exactly_the_named_layers():
    from apps.basics import ablation

    full = ablation.alexnet_without((), width=0.125)
    assert ablation.weight_layers(full) == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "probabilities"]
    shallow = ablation.alexnet_without(ablation.VARIANTS["no conv3, conv4, fc6, fc7"], width=0.125)
    assert ablation.weight_layers(shallow) == ["conv1", "conv2", "conv5", "probabilities"]
    # the pooling stays: the classifier sees the same 4x4 grid, with conv5's 16 channels
    assert shallow.get_layer("flatten").output.shape[1:] == full.get_layer("flatten").output.shape[1:] == (256,)
    # conv5 now reads conv2's 16 channels instead of conv4's 24: 3·3·16·16 + 16 weights
    assert shallow.get_layer("conv5").count_params() == 3 * 3 * 16 * 16 + 16


def test_removing_most_of_the_depth_costs_validation_accuracy():
    from apps.basics import ablation

    images, epochs, width = ablation.SETTINGS["small"]  # 2,000 images, 1 epoch, width 1/8
    train, val = ablation.image_arrays(images, seed=0)
    names = ("full", "conv1, conv5 only", "conv1 only")
    r = ablation.compare(train, val, {n: ablation.VARIANTS[n] for n in names}, epochs=epochs, width=width, seed=0)
    full, three, two = (r[n]["val_accuracy"][-1] for n in names)
    # Measured over seeds 0-7 (validation accuracy after the epoch): full 0.61-0.70; conv1 + conv5 + softmax
    # 0.008-0.12 below it (0.037 at seed 0); conv1 + softmax another 0.09-0.35 below that.
    assert full > three, r
    assert three > two + 0.04, r
    assert full > two + 0.1, r
