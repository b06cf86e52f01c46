"""Atari end to end on real Pong: the DeepMind wrappers, then a couple of hundred agent steps of
DQN through the CLI (train, stop, resume from disk), evaluation with a GIF, export with TFLite
parity, and the exported TFLite policy playing."""

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


def test_dqn_pong_smoke_train_resume_evaluate_export_play(tmp_path, capsys):
    from apps.rl.__main__ import main

    out, export_dir = str(tmp_path / "pong"), str(tmp_path / "export")
    train = ["dqn", "train", "--preset", "pong", "--steps", "160", "--num-envs", "2", "--train-freq", "4",
             "--buffer-size", "600", "--learning-starts", "80", "--batch-size", "8", "--target-update", "40",
             "--log-every", "40", "--checkpoint-every", "80", "--strategy", "default", "--out", out]
    main(train + ["--budget-steps", "100"])  # this sitting stops after 100 agent steps (as a kill would)
    state = json.load(open(os.path.join(out, "checkpoints", "state.json")))
    assert state["env_steps"] == 100 and os.path.exists(os.path.join(out, "checkpoints", "replay.npz"))
    capsys.readouterr()
    main(train)  # the same command again resumes from the checkpoint on disk (fresh agent and buffer)
    printed = capsys.readouterr().out
    assert "resumed" in printed and "at agent step 100" in printed and "returns.png" in printed
    rows = list(__import__("csv").DictReader(open(os.path.join(out, "train.csv"))))
    assert [int(r["env_step"]) for r in rows] == [40, 80, 100, 120, 160]  # no duplicates after the resume
    # one update per 4 agent steps from step 80 on: 41 vector steps of 2 envs = 20.5 credits; the
    # fraction is carried across the resume in the checkpoint
    assert int(rows[-1]["updates"]) == 20 and float(rows[-1]["loss"]) >= 0
    assert int(rows[-1]["frames"]) == 4 * 160

    from apps.rl import dqn
    from core import export as core_export

    config, agent = dqn.load_agent(out)
    assert int(agent.env_steps.numpy()) == 160 and agent.input_shape == (84, 84, 4)
    assert int(agent.last_sync.numpy()) == 160  # target synced every 40 agent steps once learning began
    report = dqn.evaluate(out, episodes=1, max_steps=20, log=lambda *a: None)
    assert os.path.getsize(report["gif"]) > 1000 and report["strip"].endswith(".png")
    exported = dqn.export(out, export_dir=export_dir, kinds=("float",), log=lambda *a: None)
    assert exported["q_max_abs_diff"]["float"] < 1e-4 and exported["action_agreement"]["float"] == 1.0
    assert exported["saved_model_vs_keras"] < 1e-5
    frames = dqn.sample_observations(config, agent, count=4, seed=3)
    served = core_export.run_saved_model(exported["saved_model"], {"frames": frames})
    np.testing.assert_array_equal(served["action"], served["q_values"].argmax(1))
    np.testing.assert_allclose(served["q_values"], agent.q_values(frames), atol=1e-5)
    gif = str(tmp_path / "play.gif")
    main(["dqn", "play", "--export-dir", export_dir, "--max-steps", "20", "--gif", gif])
    assert "ALE/Pong-v5 with" in capsys.readouterr().out and os.path.getsize(gif) > 1000


def test_missing_run_is_a_one_line_error(tmp_path):
    from apps.rl.__main__ import main
    from core.errors import run_cli

    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, ["dqn", "evaluate", "--out", str(tmp_path / "nothing")], prog="apps.rl")
    assert exit_info.value.code == 2
