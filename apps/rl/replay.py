"""Experience replay stored compactly: every frame once, as uint8.

One ring per environment of the vector env (each ring sees one episode after
another, so stacks never mix environments). A slot holds the observation
(frame) seen at time t and, once the agent has acted on it, the action,
reward and whether the episode *terminated* right after (truncation keeps
the bootstrap). The transition of slot t is

    s  = stack of frames t-k+1 .. t
    s' = stack of frames t-k+2 .. t+1

so the k+1 frames t-k+1 .. t+1 serve both observations: `sample` returns
them as one window (batch, k+1, *frame) and the learner slices s = [:, :k],
s' = [:, 1:]. Stacks never reach into the previous episode: frames before an
episode's first frame are replaced by that first frame (the same rule the
actor uses when it resets its own stack), so sampled stacks equal what the
agent saw. At the end of an episode the final observation is stored in its
own slot with no action (it is only ever an s'), and the next episode
starts in the following slot flagged `first`.

A slot is sampled only when it has an action (its successor t+1 is then
written by construction) and, once the ring has wrapped, when the frames of
its stack have not been overwritten (its k-1 predecessors are still there, or
its episode started within the kept slots).
"""

import json
import os
import zipfile

import numpy as np

from core.errors import UserError, first_line


class ReplayBuffer:
    def __init__(self, capacity, frame_shape, num_envs=1, stack=1, dtype=np.uint8, seed=0):
        per_env = capacity // num_envs
        if per_env < stack + 2:
            raise UserError(f"replay capacity {capacity} is too small for {num_envs} environments "
                            f"and a stack of {stack}")
        self.capacity, self.per_env, self.num_envs, self.stack = per_env * num_envs, per_env, num_envs, stack
        self.frame_shape = tuple(frame_shape)
        self.frames = np.zeros((num_envs, per_env) + self.frame_shape, dtype)
        self.actions = np.zeros((num_envs, per_env), np.int32)
        self.rewards = np.zeros((num_envs, per_env), np.float32)
        self.terminals = np.zeros((num_envs, per_env), bool)
        self.firsts = np.zeros((num_envs, per_env), bool)
        self.has_action = np.zeros((num_envs, per_env), bool)
        self.cursor = np.zeros(num_envs, np.int64)  # next slot to write, per ring
        self.size = np.zeros(num_envs, np.int64)
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        """Number of stored transitions (slots with an action)."""
        return int(self.has_action.sum())

    @property
    def nbytes(self):
        return sum(a.nbytes for a in (self.frames, self.actions, self.rewards, self.terminals, self.firsts,
                                      self.has_action))

    def _write(self, env, frame, first):
        slot = self.cursor[env]
        self.frames[env, slot] = frame
        self.firsts[env, slot] = first
        self.has_action[env, slot] = False
        self.terminals[env, slot] = False
        self.rewards[env, slot] = 0.0
        self.actions[env, slot] = 0
        self.cursor[env] = (slot + 1) % self.per_env
        self.size[env] = min(self.size[env] + 1, self.per_env)

    def start(self, env, frame):
        """The first observation of an episode in environment `env`."""
        self._write(env, frame, first=True)

    def add(self, env, action, reward, terminated, next_frame):
        """The agent acted on the newest frame of `env` and saw `next_frame`."""
        slot = (self.cursor[env] - 1) % self.per_env
        if self.size[env] == 0 or self.has_action[env, slot]:
            raise RuntimeError("ReplayBuffer.add before start (or twice for one observation)")
        self.actions[env, slot] = action
        self.rewards[env, slot] = reward
        self.terminals[env, slot] = terminated
        self.has_action[env, slot] = True
        self._write(env, next_frame, first=False)

    def add_batch(self, actions, rewards, terminated, next_frames):
        for env in range(self.num_envs):
            self.add(env, actions[env], rewards[env], terminated[env], next_frames[env])

    def _sampleable(self, env, slot):
        """Vectorized: which (env, slot) pairs may be sampled."""
        ok = self.has_action[env, slot]
        full = self.size[env] == self.per_env
        age = (slot - np.where(full, self.cursor[env], 0)) % self.per_env  # 0 = oldest slot
        history = ~full | (age >= self.stack - 1)
        for back in range(self.stack - 1):  # or the episode starts within the kept slots
            history |= (back <= age) & self.firsts[env, (slot - back) % self.per_env]
        return ok & history

    def can_sample(self):
        return len(self) > 0

    def window_indices(self, slot):
        """Slot numbers of the frames t-k+1 .. t+1, with the episode-start rule applied."""
        k = self.stack
        offsets = np.arange(-k + 1, 2)
        return (slot[:, None] + offsets[None, :]) % self.per_env

    def stacked(self, env, positions):
        """Frames at `positions` (batch, L) whose last column is the newest, with frames before an
        episode start replaced by that start frame."""
        eff = positions.copy()
        replaced = np.zeros(len(env), bool)
        for col in range(positions.shape[1] - 2, -1, -1):
            replaced |= self.firsts[env, eff[:, col + 1]]
            eff[:, col] = np.where(replaced, eff[:, col + 1], positions[:, col])
        return self.frames[env[:, None], eff]

    def sample(self, batch_size):
        """(window, actions, rewards, terminals) with window (batch, k+1, *frame)."""
        if not self.can_sample():
            raise RuntimeError("the replay buffer holds no transitions yet")
        env = np.empty(batch_size, np.int64)
        slot = np.empty(batch_size, np.int64)
        todo = np.arange(batch_size)
        sizes = np.maximum(self.size, 1)
        for _ in range(1000):
            e = self.rng.integers(0, self.num_envs, len(todo))
            s = (self.rng.random(len(todo)) * sizes[e]).astype(np.int64)
            ok = self._sampleable(e, s)
            env[todo[ok]], slot[todo[ok]] = e[ok], s[ok]
            todo = todo[~ok]
            if len(todo) == 0:
                break
        else:
            raise RuntimeError("could not find sampleable transitions")
        window = self.stacked(env, self.window_indices(slot))
        return window, self.actions[env, slot], self.rewards[env, slot], self.terminals[env, slot].astype(np.float32)

    # -- checkpoints ----------------------------------------------------------------------------
    FIELDS = ("frames", "actions", "rewards", "terminals", "firsts", "has_action", "cursor", "size")

    def save(self, path):
        tmp = path + ".tmp.npz"
        np.savez(tmp, rng=np.array(json.dumps(self.rng.bit_generator.state)),
                 **{name: getattr(self, name) for name in self.FIELDS})
        os.replace(tmp, path)

    def load(self, path):
        try:
            with np.load(path, allow_pickle=False) as data:
                for name in self.FIELDS:
                    if data[name].shape != getattr(self, name).shape:
                        raise UserError(f"{path}: replay field {name} has shape {data[name].shape}, "
                                        f"expected {getattr(self, name).shape} (different settings?)")
                    setattr(self, name, data[name].copy())
                self.rng.bit_generator.state = json.loads(str(data["rng"]))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            raise UserError(f"cannot read replay buffer {path} (corrupt or partial?): {first_line(error)}") from None
