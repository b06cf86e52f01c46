"""apps.visualize adversarial examples (FGSM, PGD) and adversarial training, on a real LeNet-5 run."""

import json
import os

import numpy as np
import pytest
from test_visualize_support import classify_run

from apps.visualize import adversarial, common
from apps.visualize.__main__ import main
from core.errors import UserError


@pytest.fixture(scope="module")
def lenet():
    return common.load_classifier(classify_run())


@pytest.fixture(scope="module")
def test_set(lenet):
    return common.test_examples(lenet, 200)


def _accuracy(clf, x, y):
    return float(np.mean(clf.predict(x).argmax(axis=1) == y))


def test_fgsm_moves_each_pixel_by_eps_and_lowers_accuracy(lenet, test_set):
    x, y = test_set
    eps = 0.05
    adv = adversarial.fgsm(lenet, x, y, eps)
    delta = adv - x
    assert np.abs(delta).max() == pytest.approx(eps * 255, rel=1e-5)
    # Every pixel moves by exactly eps unless the pixel range clips it or its gradient is 0.
    gradient = adversarial.loss_gradient(adversarial._scores_fn(lenet), x, y).numpy()
    free = (np.abs(gradient) > 0) & (x + eps * 255 <= 255) & (x - eps * 255 >= 0)
    np.testing.assert_allclose(np.abs(delta[free]), eps * 255, rtol=1e-5)
    assert np.all(np.sign(delta[free]) == np.sign(gradient[free]))
    assert adv.min() >= 0 and adv.max() <= 255
    clean = _accuracy(lenet, x, y)
    assert clean > 0.4  # chance is 0.1
    assert _accuracy(lenet, adv, y) < clean - 0.1


def test_pgd_stays_in_the_eps_ball_and_is_at_least_as_strong_as_fgsm(lenet, test_set):
    x, y = test_set
    eps = 0.05
    adv = adversarial.pgd(lenet, x, y, eps, steps=10)
    assert np.abs(adv - x).max() <= eps * 255 + 1e-3
    assert adv.min() >= 0 and adv.max() <= 255
    pgd_accuracy = _accuracy(lenet, adv, y)
    fgsm_accuracy = _accuracy(lenet, adversarial.fgsm(lenet, x, y, eps), y)
    assert pgd_accuracy <= fgsm_accuracy
    assert pgd_accuracy < _accuracy(lenet, x, y) - 0.15


def test_targeted_attacks_push_images_into_the_target_class(lenet, test_set):
    x, y = test_set
    keep = y != 1
    x, y = x[keep], y[keep]
    target = np.full(len(y), 1)  # "Trouser"
    table = adversarial.robust_accuracy(lenet, x, y, epsilons=(0.0, 0.2), methods=("fgsm", "pgd"), target=target)
    before, after = table["pgd_target_success"]
    assert before < 0.2  # few look like trousers before the attack
    assert after > max(0.25, 2 * before)
    assert after >= table["fgsm_target_success"][1] - 0.02


def test_attack_cli_reports_accuracy_per_eps_and_writes_triplets(tmp_path, capsys):
    main(["attack", "--run", classify_run(), "--figures", str(tmp_path), "--count", "100", "--eps", "0", "0.05",
          "--steps", "5"])
    printed = capsys.readouterr().out
    folder = str(tmp_path)
    for png in ("robust_accuracy.png", "fgsm_examples.png", "pgd_examples.png"):
        assert f"wrote {os.path.join(folder, png)}" in printed and os.path.getsize(os.path.join(folder, png)) > 15_000
    table = json.load(open(os.path.join(folder, "robust_accuracy.json")))
    assert table["epsilons"] == [0.0, 0.05] and table["fgsm"][1] < table["fgsm"][0]
    with pytest.raises(UserError, match="epsilon is a fraction of the pixel range"):
        adversarial.fgsm(common.load_classifier(classify_run()), np.zeros((1, 28, 28, 1)), np.zeros(1), 25)


def test_adversarial_training_makes_a_run_folder_that_resists_attacks(tmp_path):
    run = classify_run()
    out = str(tmp_path / "lenet5_adv")
    # One epoch of FGSM (random start) training from the standard weights: short enough for a test.
    result = adversarial.adversarial_train(run=run, out=out, eps=0.1, method="fgsm", share=1.0, epochs=1,
                                           batch_size=32, finetune=True, eval_count=150, epsilons=(0.0, 0.1),
                                           eval_steps=5)
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["adversarial"]["eps"] == 0.1 and config["model"] == "lenet5"
    robust = common.load_classifier(out)  # a normal classify run folder
    assert robust.model.count_params() == common.load_classifier(run).model.count_params()
    standard_table, robust_table = result["tables"].values()
    assert robust_table["fgsm"][0] > 0.5  # still a classifier on clean images
    assert robust_table["fgsm"][1] > standard_table["fgsm"][1] + 0.08  # and harder to fool,
    assert robust_table["pgd"][1] > standard_table["pgd"][1] + 0.05  # by PGD too
    assert os.path.getsize(result["png"]) > 15_000
