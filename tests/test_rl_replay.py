"""Replay buffer invariants: frames stored once, stacks that respect episode starts,
wrap-around, several environments, save/load. NumPy only (fast)."""

import numpy as np
import pytest

from apps.rl.replay import ReplayBuffer


def frame(value):
    return np.full((2, 2), value, np.uint8)


def windows(buffer, batch=512):
    """Every distinct sampled transition as (tuple of frame ids, action, reward, terminal)."""
    window, actions, rewards, terminals = buffer.sample(batch)
    return {(tuple(int(f[0, 0]) for f in w), int(a), float(r), float(d))
            for w, a, r, d in zip(window, actions, rewards, terminals)}


def test_stacks_do_not_cross_episode_boundaries():
    buffer = ReplayBuffer(100, (2, 2), stack=4, seed=0)
    buffer.start(0, frame(1))
    buffer.add(0, action=1, reward=0.5, terminated=False, next_frame=frame(2))
    buffer.add(0, action=2, reward=-1.0, terminated=True, next_frame=frame(3))  # final observation of episode 1
    buffer.start(0, frame(10))
    buffer.add(0, action=3, reward=1.0, terminated=False, next_frame=frame(11))
    buffer.add(0, action=4, reward=0.0, terminated=False, next_frame=frame(12))
    assert len(buffer) == 4
    # window = frames t-3 .. t+1; s = [:4], s' = [1:]; before an episode's first frame: that frame again
    assert windows(buffer) == {
        ((1, 1, 1, 1, 2), 1, 0.5, 0.0),
        ((1, 1, 1, 2, 3), 2, -1.0, 1.0),
        ((10, 10, 10, 10, 11), 3, 1.0, 0.0),   # not (2, 3, 10, ...): the previous episode is cut off
        ((10, 10, 10, 11, 12), 4, 0.0, 0.0),
    }
    # each frame is stored once: 6 slots for 6 observations
    assert buffer.size[0] == 6 and buffer.frames.dtype == np.uint8


def test_final_observation_and_pending_slot_are_never_a_start():
    buffer = ReplayBuffer(50, (2, 2), stack=2, seed=1)
    buffer.start(0, frame(1))
    buffer.add(0, 0, 1.0, True, frame(2))
    buffer.start(0, frame(5))  # pending: no action yet
    assert windows(buffer) == {((1, 1, 2), 0, 1.0, 1.0)}


def test_wrap_around_keeps_only_complete_stacks():
    buffer = ReplayBuffer(6, (2, 2), stack=3, seed=2)
    buffer.start(0, frame(1))
    for value in range(2, 21):
        buffer.add(0, value % 3, float(value), False, frame(value))
    # the ring holds frames 15..20; 20 has no action yet; 15 and 16 lack their predecessors
    assert sorted(int(f[0, 0]) for f in buffer.frames[0]) == [15, 16, 17, 18, 19, 20]
    # (the action taken on frame v was stored with reward v + 1 and led to frame v + 1)
    assert windows(buffer) == {
        ((15, 16, 17, 18), 18 % 3, 18.0, 0.0),
        ((16, 17, 18, 19), 19 % 3, 19.0, 0.0),
        ((17, 18, 19, 20), 20 % 3, 20.0, 0.0),
    }


def test_wrap_around_across_an_episode_start():
    buffer = ReplayBuffer(6, (2, 2), stack=4, seed=3)
    buffer.start(0, frame(1))
    buffer.add(0, 0, 0.0, True, frame(2))
    buffer.start(0, frame(7))
    for value in (8, 9, 10, 11):
        buffer.add(0, value, 0.0, False, frame(value))
    # ring: 11 overwrote 1; it holds 2 (episode 1's final frame), 7..11. Stacks of episode 2 are
    # complete although 7 is nearly the oldest slot: they never reach before its first frame.
    assert windows(buffer) == {
        ((7, 7, 7, 7, 8), 8, 0.0, 0.0),
        ((7, 7, 7, 8, 9), 9, 0.0, 0.0),
        ((7, 7, 8, 9, 10), 10, 0.0, 0.0),
        ((7, 8, 9, 10, 11), 11, 0.0, 0.0),
    }
    buffer.add(0, 12, 0.0, False, frame(12))  # overwrites 2; then 13 overwrites 7, the episode start
    buffer.add(0, 13, 0.0, False, frame(13))
    got = windows(buffer)
    assert ((8, 9, 10, 11, 12), 12, 0.0, 0.0) in got and ((9, 10, 11, 12, 13), 13, 0.0, 0.0) in got
    assert all(7 not in w and 13 != w[0] for w, *_ in got) and len(got) == 2


def test_environments_are_kept_apart():
    buffer = ReplayBuffer(40, (2, 2), num_envs=2, stack=3, seed=4)
    buffer.start(0, frame(100))
    buffer.start(1, frame(200))
    for i in range(1, 8):
        buffer.add_batch([0, 1], [0.0, 0.0], [False, False], [frame(100 + i), frame(200 + i)])
    got = windows(buffer, 1024)
    assert len(got) == 14
    for window, action, _, _ in got:
        assert all((f >= 200) == (action == 1) for f in window)
        assert list(window) == sorted(window)


def test_save_and_load_round_trip(tmp_path):
    buffer = ReplayBuffer(30, (2, 2), stack=2, seed=5)
    buffer.start(0, frame(1))
    for value in range(2, 40):
        buffer.add(0, value % 4, value / 10, value % 7 == 0, frame(value))
        if value % 7 == 0:
            buffer.start(0, frame(value + 100))
    path = str(tmp_path / "replay.npz")
    buffer.save(path)
    copy = ReplayBuffer(30, (2, 2), stack=2, seed=99)
    copy.load(path)
    for a, b in zip(buffer.sample(16), copy.sample(16)):  # same contents and same sampler state
        np.testing.assert_array_equal(a, b)


def test_add_before_start_is_an_error():
    buffer = ReplayBuffer(10, (2, 2), stack=2)
    with pytest.raises(RuntimeError):
        buffer.add(0, 0, 0.0, False, frame(1))
