"""Atari end to end on real Pong: the DeepMind wrappers, then a couple of hundred agent steps of
DQN through the CLI (train, stop, resume from disk exactly as if never stopped), evaluation with
a GIF, export with TFLite parity, and the exported TFLite policy playing."""

import json
import os

import numpy as np
import pytest

from apps.rl import atari


def test_wrappers_produce_84x84_frames_clipped_rewards_and_life_episodes():
    env = atari.make_env("ALE/Breakout-v5", seed=0)
    frame, _ = env.reset(seed=0)
    assert frame.shape == (84, 84) and frame.dtype == np.uint8
    rng = np.random.default_rng(0)
    life_ends, game_returns, rewards = 0, [], set()
    for _ in range(600):
        frame, reward, terminated, truncated, info = env.step(int(rng.integers(4)))
        rewards.add(reward)
        if terminated or truncated:
            life_ends += 1
            if "game_return" in info:
                game_returns.append(info["game_return"])
            env.reset()
    env.close()
    assert rewards <= {0.0, 1.0}                      # clipped (raw Breakout bricks are worth up to 7)
    assert life_ends > len(game_returns) >= 1         # a lost life ends the learner's episode, not the game
    eval_env = atari.make_env("ALE/Breakout-v5", training=False, seed=0)
    eval_env.reset(seed=0)
    lives_before = eval_env.unwrapped.ale.lives()
    assert lives_before == 5
    eval_env.close()


def test_max_and_skip_takes_the_max_of_the_last_two_frames():
    raw = atari.make_env("ALE/Pong-v5", training=False, seed=0)
    skip = raw
    while not isinstance(skip, atari.MaxAndSkip):
        skip = skip.env
    base = skip.env
    base.reset(seed=0)
    frames = []
    for _ in range(4):
        frames.append(base.step(0)[0])
    base.reset(seed=0)
    expected = np.maximum(frames[2], frames[3])
    np.testing.assert_array_equal(skip.step(0)[0], expected)
    raw.close()


@pytest.mark.parametrize("asynchronous", [False, True])
def test_vector_env_state_round_trip_continues_games_exactly(asynchronous, tmp_path):
    """Breakout (lives, game overs, NOOP resets) from a saved state: a fresh vector env restored
    from the .npz file continues exactly as the original, through life losses and resets."""
    envs = atari.make_vector_env("ALE/Breakout-v5", 2, seed=0, asynchronous=asynchronous)
    envs.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(150):
        envs.step(rng.integers(0, 4, 2))
    np.savez(tmp_path / "envs.npz", **atari.vector_env_state(envs))
    actions = [rng.integers(0, 4, 2) for _ in range(300)]
    original = [envs.step(a) for a in actions]
    envs.close()

    def replay(restore):
        fresh = atari.make_vector_env("ALE/Breakout-v5", 2, seed=7, asynchronous=asynchronous)
        fresh.reset(seed=7)
        if restore:
            with np.load(tmp_path / "envs.npz") as state:
                atari.set_vector_env_state(fresh, dict(state))
        try:
            return [fresh.step(a) for a in actions]
        finally:
            fresh.close()

    restored = replay(restore=True)
    resets = sum(int((terminated | truncated).sum()) for _, _, terminated, truncated, _ in original)
    assert resets >= 5  # life losses and game overs happened after the save
    for (frames, rewards, terminated, truncated, info), again in zip(original, restored):
        np.testing.assert_array_equal(frames, again[0])
        np.testing.assert_array_equal(rewards, again[1])
        np.testing.assert_array_equal(terminated, again[2])
        np.testing.assert_array_equal(truncated, again[3])
        if "final_info" in info:
            np.testing.assert_array_equal(info["final_info"].get("game_return", []),
                                          again[4]["final_info"].get("game_return", []))
    unrestored = replay(restore=False)  # the check has teeth: without the state the games differ
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(original, unrestored))


PONG_TRAIN = ["train", "--task", "dqn", "--preset", "pong", "--steps", "160", "--num-envs", "2", "--train-freq", "4",
              "--buffer-size", "600", "--learning-starts", "80", "--batch-size", "8", "--target-update", "40",
              "--log-every", "40", "--checkpoint-every", "80", "--strategy", "default"]


def test_dqn_pong_killed_run_resumes_exactly(tmp_path, capsys):
    """Run A plays Pong straight to 160 agent steps; run B stops after 100 (as a kill would, after
    learning began) and the same command resumes it from disk to 160: the emulators continue
    mid-game, so every observation after the resume, the replay, the weights and the rows match.
    (Without XLA, to keep it short; the CartPole resume test covers the XLA update.)"""
    from apps.rl import dqn
    from apps.rl.__main__ import main
    from tests.test_rl_resume import assert_same_run, csv_rows

    train = PONG_TRAIN + ["--no-jit"]
    run_a, run_b = str(tmp_path / "a"), str(tmp_path / "b")
    main(train + ["--run", run_a])
    main(train + ["--run", run_b, "--budget-steps", "100"])  # this sitting stops after 100 agent steps
    halfway = dqn.checkpoint_contents(run_b)
    assert halfway["state/env_steps"] == 100 and halfway["state/update_credit"] == 0.5  # 11 vector steps x 2/4
    capsys.readouterr()
    main(train + ["--run", run_b])  # the same command again: a fresh process state resumes from disk
    printed = capsys.readouterr().out
    assert "resumed" in printed and "at agent step 100" in printed and "returns.png" in printed
    contents, agent = assert_same_run(run_a, run_b)
    # the observations after the resume (replay slots 51.. of each env's ring: one frame per vector
    # step after the first) are real, moving Pong screens, equal to the uninterrupted run's
    after_resume = contents["replay/frames"][:, 51:81]
    assert after_resume.shape == (2, 30, 84, 84)
    assert all(len({frame.tobytes() for frame in ring}) > 10 for ring in after_resume)
    np.testing.assert_array_equal(after_resume, dqn.checkpoint_contents(run_b)["replay/frames"][:, 51:81])
    assert contents["envs/actor_stacks"].shape == (2, 4, 84, 84)
    assert contents["envs/env0/9.AtariEnv/ale"].size > 1000  # the emulator, saved whole
    rows = csv_rows(os.path.join(run_b, "train.csv"))
    assert [int(r["env_step"]) for r in rows] == [40, 80, 120, 160]  # no duplicates after the resume
    # one update per 4 agent steps from step 80 on: 41 vector steps of 2 envs = 20.5 credits; the
    # fraction is carried across the resume in the checkpoint
    assert int(rows[-1]["updates"]) == 20 and float(rows[-1]["loss"]) >= 0

    assert int(rows[-1]["frames"]) == 4 * 160
    assert int(agent.last_sync.numpy()) == 160  # target synced every 40 agent steps once learning began


@pytest.fixture(scope="module")
def pong_smoke_run(tmp_path_factory):
    """100 agent steps of the Pong preset on 2 async envs, learning from step 80 with the XLA update."""
    from apps.rl.__main__ import main

    out = str(tmp_path_factory.mktemp("pong"))
    main(PONG_TRAIN[:6] + ["100"] + PONG_TRAIN[7:] + ["--run", out])
    return out


def test_dqn_pong_smoke_trains_and_evaluates(pong_smoke_run):
    from apps.rl import dqn

    config, agent = dqn.load_agent(pong_smoke_run)
    assert int(agent.env_steps.numpy()) == 100 and agent.input_shape == (84, 84, 4)
    assert int(agent.updates.numpy()) == 5  # 11 vector steps of 2 envs from step 80, one update per 4
    report = dqn.evaluate(pong_smoke_run, episodes=1, max_steps=20, log=lambda *a: None)
    assert os.path.getsize(report["gif"]) > 1000 and report["strip"].endswith(".png")


def test_dqn_pong_smoke_exports_serves_and_plays(pong_smoke_run, tmp_path, capsys):
    from apps.rl import dqn
    from apps.rl.__main__ import main
    from core import export as core_export

    out, export_dir = pong_smoke_run, str(tmp_path / "export")
    config, agent = dqn.load_agent(out)
    exported = dqn.export(out, export_dir=export_dir, kinds=("float",), int8=False, log=lambda *a: None)
    assert exported["parity"]["float"]["q_max_abs_diff"] < 1e-4
    assert exported["parity"]["float"]["action_agreement"] == 1.0
    assert set(exported["tflite"]) == {"float"}  # int8: test_dqn_pong_int8_export (slow)
    assert exported["saved_model_vs_keras"] < 1e-5
    frames = dqn.sample_observations(config, agent, count=4, seed=3)
    served = core_export.run_saved_model(exported["saved_model"], {"frames": frames})
    np.testing.assert_array_equal(served["action"], served["q_values"].argmax(1))
    np.testing.assert_allclose(served["q_values"], agent.q_values(frames), atol=1e-5)
    gif = os.path.join(out, "play.gif")
    capsys.readouterr()
    main(["predict", "--task", "dqn", "--run", out, "--export-dir", export_dir, "--max-steps", "20"])
    assert "ALE/Pong-v5 with" in capsys.readouterr().out and os.path.getsize(gif) > 1000
    assert json.load(open(os.path.join(out, "play.json")))["env"] == "ALE/Pong-v5"


def test_missing_run_is_a_one_line_error(tmp_path):
    from apps.rl.__main__ import main
    from core.errors import run_cli

    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, ["evaluate", "--task", "dqn", "--run", str(tmp_path / "nothing")], prog="apps.rl")
    assert exit_info.value.code == 2


@pytest.mark.slow  # 50-70 s with the other worker busy: the int8 calibration and conversion of the Nature CNN
def test_dqn_pong_int8_export(tmp_path):
    """A short Pong run's Q-network exported with full-int8 TFLite (uint8 frames in, calibrated on frames of
    random play): Q-values within the int8 tolerance of the SavedModel's, relative to their scale."""
    from apps.rl import dqn
    from apps.rl.__main__ import main

    out = str(tmp_path / "pong")
    main(PONG_TRAIN[:6] + ["100"] + PONG_TRAIN[7:] + ["--run", out])
    exported = dqn.export(out, export_dir=str(tmp_path / "export"), kinds=(), log=lambda *a: None)
    assert os.path.isfile(exported["tflite"]["int8"])
    q_scale = 1 + np.abs(exported["saved_model_outputs"]["q_values"]).max()
    assert 0 <= exported["parity"]["int8"]["q_max_abs_diff"] <= dqn.Q_TOLERANCE["int8"] * q_scale
