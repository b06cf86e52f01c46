"""REINFORCE with a baseline learns CartPole on the real environment; its policy exports with TFLite parity."""

import json
import os

import numpy as np
import pytest

from apps.rl import reinforce
from apps.rl.__main__ import main
from apps.rl.config import ReinforceConfig
from core import export


def test_returns_to_go_by_hand():
    np.testing.assert_allclose(reinforce.returns_to_go(np.array([1.0, 2.0, 3.0]), 0.5), [2.75, 3.5, 3.0])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return reinforce.train(ReinforceConfig(episodes=120, batch_episodes=8, seed=0),
                           run=str(tmp_path_factory.mktemp("reinforce")), log=lambda *a: None)


def test_reinforce_with_baseline_learns_cartpole(trained):
    """Random play lasts ~22 steps; after 120 episodes the policy must last several times longer."""
    policy, returns, png = trained
    assert len(returns) == 120 and os.path.exists(png)
    assert returns[:16].mean() < 40
    assert returns[-40:].mean() > 70, returns[-40:]
    assert reinforce.greedy_return(policy, episodes=3) > 70


def test_trained_policy_exports_saved_model_and_tflite_with_parity(trained, tmp_path):
    policy = trained[0]
    report = reinforce.export(policy, export_dir=str(tmp_path / "reinforce"), kinds=("float",), log=lambda *a: None)
    folder = report["saved_model"]
    assert sorted(os.listdir(tmp_path / "reinforce")) == ["1", "tflite"]
    assert os.path.isfile(os.path.join(folder, export.INPUT_SPEC))
    assert os.path.isfile(os.path.join(folder, "reinforce_config.json"))
    observations = export.read_sample_inputs(folder)["observations"]  # visited by the greedy policy
    assert observations.shape == (export.SAMPLE_ROWS, 4)
    # The float file against Keras: probabilities in [0, 1], float32 softmax rounding is ~1e-7 of them.
    logits = policy(observations, training=False).numpy()
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    lite = export.run_tflite(report["tflite"]["float"], {"observations": observations})
    assert np.abs(lite["probabilities"] - probabilities).max() < export.TOLERANCES["float"]
    gap = np.abs(probabilities[:, 0] - probabilities[:, 1])
    decisive = gap > 2 * export.TOLERANCES["float"]
    assert decisive.mean() > 0.5  # a trained policy has preferences
    np.testing.assert_array_equal(lite["action"][decisive], logits.argmax(1)[decisive])
    assert report["saved_model_vs_keras"] < export.TOLERANCES["float"]
    # The check is the one that passed: a file that swapped the actions would fail it.
    swapped = {**lite, "action": 1 - lite["action"]}
    assert reinforce.parity("float", lite, swapped)[1] is not None
    assert os.path.isfile(report["tflite"]["int8"])  # calibrated on other episodes' observations
    assert 0 <= report["max_abs_diff"]["int8"] <= reinforce.PROBABILITY_TOLERANCES["int8"]


def test_cli_trains_evaluates_and_exports_from_the_run_folder(tmp_path, capsys):
    run, saved = str(tmp_path / "run"), str(tmp_path / "saved")
    main(["train", "--task", "reinforce", "--episodes", "8", "--run", run])
    assert sorted(os.listdir(run)) == ["config.json", "episodes.csv", "model.keras", "returns.png"]
    main(["evaluate", "--task", "reinforce", "--run", run, "--episodes", "2"])
    assert "mean return" in capsys.readouterr().out and os.path.isfile(os.path.join(run, "evaluation.json"))
    main(["export", "--task", "reinforce", "--run", run, "--export-dir", saved])
    assert "TFLite dynamic" in capsys.readouterr().out
    for path in ("1/saved_model.pb", "1/assets.extra/input_spec.json", "tflite/1/float.tflite",
                 "tflite/1/dynamic.tflite"):
        assert os.path.isfile(os.path.join(saved, path)), path
    main(["predict", "--task", "reinforce", "--run", run, "--export-dir", saved, "--episodes", "2"])
    played = json.load(open(os.path.join(run, "play.json")))
    assert played["env"] == "CartPole-v1" and len(played["returns"]) == 2 and min(played["lengths"]) >= 8
