"""apps.visualize: activation maximization / DeepDream, inversion and t-SNE on a real LeNet-5 run."""

import os

import numpy as np
import pytest
from test_visualize_support import classify_run

from apps.visualize import common, embedding, synthesis
from apps.visualize.__main__ import main


@pytest.fixture(scope="module")
def lenet():
    return common.load_classifier(classify_run())


def test_activation_maximization_raises_the_channel_activation(lenet, tmp_path):
    result = synthesis.dream(lenet, layer="c3", channel=4, steps=15, octaves=2, jitter=1, figures=str(tmp_path))
    assert result["after"][0] > result["before"][0] + 0.2  # the mean pre-activation of the channel
    assert result["images"].shape == (1, 28, 28, 1)
    assert result["images"].min() >= 0 and result["images"].max() <= 255
    assert os.path.getsize(result["png"]) > 5_000


def test_class_dream_raises_every_class_score_and_deepdream_changes_images(lenet, tmp_path):
    result = synthesis.dream(lenet, steps=10, octaves=2, figures=str(tmp_path))
    assert result["images"].shape == (10, 28, 28, 1)
    assert np.all(result["after"] > result["before"] + 0.3) and np.mean(result["after"] - result["before"]) > 1.0
    x, _ = common.test_examples(lenet, 3)
    deep = synthesis.dream(lenet, layer="c1", start=x, steps=10, octaves=2, figures=str(tmp_path))
    assert np.all(deep["after"] > deep["before"])
    assert np.abs(deep["images"] - x).mean() > 1.0  # the image changed, and ...
    assert np.corrcoef(deep["images"].ravel(), x.ravel())[0, 1] > 0.5  # ... it is still the same picture


def test_inversion_reconstructs_the_image_from_a_layer(lenet, tmp_path):
    x, _ = common.test_examples(lenet, 2)
    result = synthesis.invert(lenet, "c1", x, steps=80, figures=str(tmp_path))
    assert np.all(result["final_loss"] < 0.25 * result["start_loss"])
    recon = result["images"]
    # Closer to its own original than to the other image, and correlated with it.
    own = np.mean((recon - x) ** 2, axis=(1, 2, 3))
    swapped = np.mean((recon - x[::-1]) ** 2, axis=(1, 2, 3))
    assert np.all(own < swapped)
    assert np.corrcoef(recon[0].ravel(), x[0].ravel())[0, 1] > 0.7
    assert os.path.getsize(result["png"]) > 5_000


def test_tsne_gives_one_2d_point_per_image_that_keeps_classes_apart(lenet, tmp_path):
    result = embedding.tsne(lenet, count=200, perplexity=20, max_iter=500, figures=str(tmp_path))
    assert result["points"].shape == (200, 2) and np.all(np.isfinite(result["points"]))
    assert result["knn_accuracy"] > 0.4  # chance is 0.1
    assert os.path.getsize(result["png"]) > 20_000


def test_dream_and_invert_cli(tmp_path, capsys):
    run = classify_run()
    main(["dream", "--run", run, "--figures", str(tmp_path), "--layer", "c3", "--channel", "1", "--steps", "5",
          "--octaves", "2"])
    main(["invert", "--run", run, "--figures", str(tmp_path), "--layer", "s2", "--count", "2", "--steps", "20"])
    printed = capsys.readouterr().out
    for png in ("dream_c3_1.png", "inversion_s2.png"):
        assert f"wrote {os.path.join(tmp_path, png)}" in printed
