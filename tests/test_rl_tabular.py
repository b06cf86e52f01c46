"""Bandits and tabular RL against known optima, on the real gymnasium toy-text environments."""

import os

import numpy as np
import pytest

from apps.rl import bandits, tabular
from tests.conftest import run_python

# Optimal state values of slippery FrozenLake 4x4 with γ = 1 (exact: multiples of 1/17).
FROZENLAKE_V = np.array([14, 14, 14, 14, 14, 0, 9, 0, 14, 14, 13, 0, 0, 15, 16, 0]) / 17


def test_value_iteration_reaches_the_known_frozenlake_values():
    env, gamma = tabular.make("frozenlake")
    result = tabular.value_iteration(env, gamma)
    np.testing.assert_allclose(result["V"], FROZENLAKE_V, atol=1e-8)
    # the greedy policy is optimal: evaluated exactly, it attains V*
    np.testing.assert_allclose(tabular.evaluate_policy(env, result["policy"], gamma), FROZENLAKE_V, atol=1e-7)


def test_policy_iteration_agrees_with_value_iteration():
    for name in ("frozenlake", "cliffwalking"):
        env, gamma = tabular.make(name)
        vi, pi = tabular.value_iteration(env, gamma), tabular.policy_iteration(env, gamma)
        np.testing.assert_allclose(pi["V"], vi["V"], atol=1e-7)
        assert tabular.compare_to_optimal(env, pi["policy"], vi, gamma)["optimal_action_share"] == 1.0


def test_tabular_prints_why_monte_carlo_control_falls_short_where_it_does(tmp_path):
    result = run_python(["-m", "apps.rl", "tabular", "--env", "cliffwalking", "--algorithms",
                         "value_iteration,mc_control", "--episodes", "30", "--run", str(tmp_path)], timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    notes = [i for i, line in enumerate(lines) if line.startswith("note: ")]
    mc = next(i for i, line in enumerate(lines) if line.startswith("-- mc_control"))
    assert len(notes) == 1 and notes[0] > mc  # after its own figure; value iteration is optimal: no note
    assert "Monte Carlo" in lines[notes[0]] and "expected behaviour" in lines[notes[0]]
    check = {"optimal_start_value": -13.0, "start_value": -19.0}  # the safe path: close enough, no note
    assert tabular.shortfall_note("sarsa", check) is None
    assert "--episodes" in tabular.shortfall_note("sarsa", {**check, "start_value": -3000.0})


def test_cliff_walking_q_learning_finds_the_cliff_edge_and_sarsa_the_safe_path():
    env, gamma = tabular.make("cliffwalking")
    optimal = tabular.value_iteration(env, gamma)
    assert tabular.start_states(env) @ optimal["V"] == pytest.approx(-13.0)
    q = tabular.learn("cliffwalking", "q_learning", seed=0)
    s = tabular.learn("cliffwalking", "sarsa", seed=0)
    assert tabular.greedy_return(env, q["policy"], episodes=1) == -13.0   # along the edge: optimal
    assert -19.0 <= tabular.greedy_return(env, s["policy"], episodes=1) < -13.0  # on-policy: keeps away
    grid = tabular.policy_grid("cliffwalking", env, q["policy"]).splitlines()
    assert grid[-1].startswith("↑ C") and grid[-1].endswith("G")


def test_taxi_q_learning_is_near_optimal():
    env, gamma = tabular.make("taxi")
    optimal = tabular.value_iteration(env, gamma)
    result = tabular.learn("taxi", "q_learning", seed=0)
    check = tabular.compare_to_optimal(env, result["policy"], optimal, gamma)
    assert check["optimal_start_value"] == pytest.approx(7.93, abs=0.01)
    assert check["start_value"] >= check["optimal_start_value"] - 0.5


def test_bandit_strategies_rank_as_in_the_textbook():
    results = dict(bandits.compare(runs=500, steps=1000, seed=1))
    last = {name: (r["mean_reward"][-200:].mean(), r["optimal_fraction"][-200:].mean())
            for name, r in results.items()}
    greedy, eps01, eps001 = last["greedy"], last["ε-greedy ε=0.1"], last["ε-greedy ε=0.01"]
    assert 0.85 < greedy[0] < 1.2 and greedy[1] < 0.5          # greedy locks onto a poor arm
    assert eps01[0] > greedy[0] + 0.2 and eps01[1] > 0.75       # ~1.35 reward, ~80% optimal
    assert eps001[1] < eps01[1]                                  # slower to find the best arm
    best = results["greedy"]["best_possible"]
    for name in ("softmax τ0=1.0 decay=0.01", "UCB c=2.0"):
        assert last[name][0] > eps01[0] - 0.05 and last[name][0] < best
        assert last[name][1] > 0.75


def test_bandit_and_tabular_commands_print_their_outputs(tmp_path, capsys):
    from apps.rl.__main__ import main

    out = str(tmp_path / "bandits")
    main(["bandits", "--runs", "20", "--steps", "100", "--run", out])  # the ranking: the test above
    png = os.path.join(out, "bandits.png")
    assert f"PNG: {png}" in capsys.readouterr().out and os.path.getsize(png) > 10_000
    main(["tabular", "--env", "frozenlake", "--algorithms", "value_iteration,policy_iteration", "--run",
          str(tmp_path / "tab")])
    printed = capsys.readouterr().out
    assert "optimal value of the start = 0.8235" in printed
    assert "H" in printed and "G" in printed
    # and a real process's one-line error
    result = run_python(["-m", "apps.rl", "tabular", "--algorithms", "nope"], timeout=120)
    assert result.returncode == 2 and result.stderr.strip().startswith("apps.rl: error: unknown tabular")
