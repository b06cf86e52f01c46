"""A killed DQN run resumes exactly: a run stopped half way and restarted with the same command
ends in the same state as an uninterrupted one (weights, optimizer slots, counters, ε, replay,
environments, CSV rows); a damaged checkpoint is a one-line error, never a silent load."""

import csv
import os
import shutil

import numpy as np
import pytest

from apps.rl import dqn

TIMING_COLUMNS = ("env_steps_per_s", "updates_per_s", "wall_s")  # wall-clock, differ between any two runs


def csv_rows(path):
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(f)]


def assert_same_run(run_a, run_b):
    """Every value of the two newest checkpoints, and the logged rows, are identical."""
    a, b = dqn.checkpoint_contents(run_a), dqn.checkpoint_contents(run_b)
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)
    for name in ("train.csv", "episodes.csv"):
        assert csv_rows(os.path.join(run_a, name)) == csv_rows(os.path.join(run_b, name)), name
    # the same through the agent as `evaluate`/`export` load it
    (_, agent_a), (_, agent_b) = dqn.load_agent(run_a), dqn.load_agent(run_b)
    for model in ("online", "target"):
        for wa, wb in zip(getattr(agent_a, model).weights, getattr(agent_b, model).weights):
            np.testing.assert_array_equal(wa.numpy(), wb.numpy())
    assert len(agent_a.optimizer.variables) > 2  # Adam's iteration count, moments
    for va, vb in zip(agent_a.optimizer.variables, agent_b.optimizer.variables):
        np.testing.assert_array_equal(va.numpy(), vb.numpy())
    for counter in ("env_steps", "updates", "episodes", "last_sync"):
        assert int(getattr(agent_a, counter).numpy()) == int(getattr(agent_b, counter).numpy()), counter
    return a, agent_a


def test_killed_cartpole_run_resumes_exactly(tmp_path):
    """Run A goes straight to 400 agent steps; run B stops at 200, between two log rows and with a
    fractional update credit and games in progress, and the same command resumes it to 400.
    (With the default XLA-compiled update; the Pong test runs without XLA.)"""
    from apps.rl.__main__ import main

    train = ["train", "--task", "dqn", "--preset", "cartpole", "--steps", "400", "--num-envs", "4",
             "--buffer-size", "1000", "--batch-size", "16", "--learning-starts", "100", "--train-freq", "3",
             "--updates-per-call", "2", "--target-update", "60", "--log-every", "120",
             "--checkpoint-every", "1000", "--strategy", "default"]
    run_a, run_b = str(tmp_path / "a"), str(tmp_path / "b")
    main(train + ["--run", run_a])
    main(train + ["--run", run_b, "--budget-steps", "200"])
    halfway = dqn.checkpoint_contents(run_b)
    assert halfway["state/env_steps"] == 200 and halfway["state/pending_losses"]  # losses not yet logged
    assert halfway["state/update_credit"] % 1 != 0
    assert any(halfway[f"envs/env{e}/0.EpisodeStats/length"] > 0 for e in range(4))  # mid-game
    main(train + ["--run", run_b])
    contents, agent = assert_same_run(run_a, run_b)
    assert int(agent.env_steps.numpy()) == 400 and int(agent.updates.numpy()) > 0
    assert int(agent.last_sync.numpy()) == 400  # syncs at 100 (learning starts), 160, ..., 400
    rows = csv_rows(os.path.join(run_b, "train.csv"))
    assert [int(r["env_step"]) for r in rows] == [120, 240, 360, 400]  # no row at the stop, none twice
    config = dqn.load_run_config(run_b)
    assert [float(r["epsilon"]) for r in rows] == pytest.approx(
        [dqn.epsilon_at(s, config) for s in (116, 236, 356, 396)], abs=1e-4)  # ε of the last step acted on
    assert int(rows[-1]["episodes"]) >= 10  # random CartPole games of ~20 steps ended on both sides of 200
    assert sorted(os.listdir(os.path.join(run_b, dqn.CHECKPOINTS))) == ["step-000000000200", "step-000000000400"]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A checkpointed CartPole run of a few steps (no learning: nothing to compile)."""
    out = str(tmp_path_factory.mktemp("rl_resume") / "run")
    config = dqn.DQNConfig.from_dict(dict(dqn.PRESETS["cartpole"], steps=16, num_envs=2, buffer_size=64,
                                          batch_size=4, learning_starts=1000, hidden=8, jit=False))
    dqn.train(config, out, strategy="default", log=lambda *a: None)
    return out, config


def truncate(path):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])


@pytest.mark.parametrize("damage", ["model", "replay", "envs", "state", "partial"])
def test_damaged_checkpoint_is_a_one_line_error(small_run, tmp_path, damage, capsys):
    from apps.rl.__main__ import main
    from core.errors import run_cli

    source, config = small_run
    out = str(tmp_path / "run")
    shutil.copytree(source, out)
    checkpoint = dqn.latest_checkpoint(out)
    if damage == "model":
        truncate(next(os.path.join(checkpoint, f) for f in os.listdir(checkpoint) if f.startswith("model.data")))
    elif damage in ("replay", "envs"):
        truncate(os.path.join(checkpoint, f"{damage}.npz"))
    elif damage == "state":
        truncate(os.path.join(checkpoint, "state.json"))
    else:  # killed while writing: a file of the folder is missing
        os.remove(os.path.join(checkpoint, "envs.npz"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, ["train", "--task", "dqn", "--preset", "cartpole", "--steps", "32", "--num-envs", "2",
                       "--buffer-size", "64", "--batch-size", "4", "--learning-starts", "1000", "--no-jit",
                       "--strategy", "default", "--run", out], prog="apps.rl")
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1 and ("checkpoint" in message or "replay" in message), message


def test_a_kill_while_writing_leaves_the_previous_checkpoint(small_run, tmp_path):
    """A half-written folder (the state of a kill before the rename) is ignored and cleaned up."""
    source, config = small_run
    out = str(tmp_path / "run")
    shutil.copytree(source, out)
    before = dqn.checkpoint_contents(out)
    partial = os.path.join(out, dqn.CHECKPOINTS, ".partial-step-000000000024")
    os.makedirs(partial)
    with open(os.path.join(partial, "model.index"), "wb") as f:
        f.write(b"half")
    after = dqn.checkpoint_contents(out)
    assert after["state/env_steps"] == before["state/env_steps"] == 16
    dqn.train(dqn.DQNConfig.from_dict(dict(vars(config), steps=24)), out, strategy="default", log=lambda *a: None)
    assert sorted(os.listdir(os.path.join(out, dqn.CHECKPOINTS))) == ["step-000000000016", "step-000000000024"]
