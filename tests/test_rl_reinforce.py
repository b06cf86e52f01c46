"""REINFORCE with a baseline learns CartPole on the real environment."""

import os

import numpy as np

from apps.rl import reinforce


def test_returns_to_go_by_hand():
    np.testing.assert_allclose(reinforce.returns_to_go(np.array([1.0, 2.0, 3.0]), 0.5), [2.75, 3.5, 3.0])


def test_reinforce_with_baseline_learns_cartpole(tmp_path):
    """Random play lasts ~22 steps; after 120 episodes the policy must last several times longer."""
    policy, returns, png = reinforce.train(episodes=120, batch_episodes=8, seed=0, out=str(tmp_path),
                                           log=lambda *a: None)
    assert len(returns) == 120 and os.path.exists(png)
    assert returns[:16].mean() < 40
    assert returns[-40:].mean() > 70, returns[-40:]
    assert reinforce.greedy_return(policy, episodes=3) > 70
