"""The DQN runner: the loop that connects the vector environments, the replay buffer, the agent, the logs and
the checkpointer (Dopamine's Runner). One iteration of `Runner.run` is one agent step in every environment:

  act -> step the environments and store the transitions -> close finished episodes -> learn -> log -> checkpoint

Everything a resumed run needs (actor RNG, recent returns, update credit, losses not yet logged) is in
`Runner.run_state`, which the checkpoint stores; the order of these steps is what makes a resumed run equal to
an uninterrupted one.
"""

import csv
import os
import time

import keras
import numpy as np
import tensorflow as tf

from apps.rl import atari
from apps.rl.dqn.agent import Agent, epsilon_at
from apps.rl.dqn.checkpointer import restore, save_checkpoint
from apps.rl.dqn.config import save_run_config
from apps.rl.replay import ReplayBuffer
from core import checkpoints, distribute
from core.errors import Preempted, UserError

EPISODE_COLUMNS = ["env_step", "episode", "return", "length", "epsilon"]
TRAIN_COLUMNS = ["env_step", "frames", "updates", "loss", "q_mean", "epsilon", "env_steps_per_s", "updates_per_s",
                 "episodes", "mean_return_100", "replay_size", "wall_s"]


class CSVLog:
    """Rows appended to a CSV file, flushed after each (a killed run keeps what it logged)."""

    def __init__(self, path, columns):
        self.path, self.columns = path, columns
        new = not os.path.exists(path)
        self.file = open(path, "a", newline="")
        self.writer = csv.DictWriter(self.file, columns)
        if new:
            self.writer.writeheader()

    def write(self, row):
        self.writer.writerow({k: row.get(k, "") for k in self.columns})
        self.file.flush()

    def close(self):
        self.file.close()


class Runner:
    """One training sitting of the run in `out`: built (restoring the newest checkpoint), then `run()`."""

    def __init__(self, config, out, strategy, stop_after=None, log=print):
        self.config, self.out, self.log = config, out, log
        self.strategy = strategy
        self.frame_shape, dtype, self.stack, self.num_actions = atari.observation_spec(config.env)
        if config.batch_size * strategy.num_replicas_in_sync > config.buffer_size:
            raise UserError("batch larger than the replay buffer")
        save_run_config(out, config, replicas=strategy.num_replicas_in_sync)
        self.agent = Agent(config, self.frame_shape, self.stack, self.num_actions, strategy)
        self.buffer = ReplayBuffer(config.buffer_size, self.frame_shape, config.num_envs, self.stack, dtype,
                                   seed=config.seed)
        state = restore(self.agent, out, self.buffer, with_envs=True, log=log)
        self.rng = np.random.default_rng(config.seed + 1)
        if state is not None:
            self.rng.bit_generator.state = state["rng"]
            log(f"resumed {out} at agent step {int(self.agent.env_steps.numpy())} "
                f"({int(self.agent.updates.numpy())} updates, {len(self.buffer)} transitions in replay)")
        self.step = int(self.agent.env_steps.numpy())
        self.end = config.steps if stop_after is None else min(config.steps, self.step + stop_after)
        self.recent_returns = list(state["recent_returns"]) if state else []
        # losses and mean Qs since the last train.csv row (kept across a resume, so rows match an uninterrupted run)
        self.losses = list(state.get("pending_losses", [])) if state else []
        self.qs = list(state.get("pending_qs", [])) if state else []
        self.update_credit = float(state["update_credit"]) if state else 0.0
        self.global_batch = distribute.global_batch_size(config.batch_size, strategy)
        self._open_logs()
        self._start_envs(state)
        self.started = self.last_log_time = time.time()
        self.last_log_step, self.last_log_updates = self.step, int(self.agent.updates.numpy())
        self.next_log = (self.step // config.log_every + 1) * config.log_every
        self.next_checkpoint = (self.step // config.checkpoint_every + 1) * config.checkpoint_every
        self.preempted = None  # the checkpoint saved on SIGTERM

    def _open_logs(self):
        for name in ("episodes.csv", "train.csv"):  # rows logged after the checkpoint are logged again
            checkpoints.trim_csv(os.path.join(self.out, name), lambda row: int(row["env_step"]) <= self.step)
        self.episodes_log = CSVLog(os.path.join(self.out, "episodes.csv"), EPISODE_COLUMNS)
        self.train_log = CSVLog(os.path.join(self.out, "train.csv"), TRAIN_COLUMNS)
        self.writer = tf.summary.create_file_writer(os.path.join(self.out, "logs"))

    def _start_envs(self, state):
        """New games, or the games of the checkpoint mid-play (the buffer already holds their frames)."""
        n = self.config.num_envs
        self.envs = atari.make_vector_env(self.config.env, n, seed=self.config.seed,
                                          asynchronous=self.config.async_envs)
        frames, _ = self.envs.reset(seed=self.config.seed)
        self.stacks = np.repeat(frames[:, None], self.stack, axis=1)  # (n, k, *frame): the buffer's reset rule
        if state is None:
            for e in range(n):
                self.buffer.start(e, frames[e])
            return
        atari.set_vector_env_state(self.envs, state["envs"])
        self.stacks = state["envs"]["actor_stacks"]
        if self.stacks.shape != (n, self.stack) + tuple(self.frame_shape):
            raise UserError(f"the checkpoint's actor observations have shape {self.stacks.shape}, expected "
                            f"{(n, self.stack) + tuple(self.frame_shape)} (different settings?)")

    @property
    def run_state(self):
        return dict(rng=self.rng.bit_generator.state, recent_returns=self.recent_returns,
                    update_credit=self.update_credit, env_steps=self.step, pending_losses=self.losses,
                    pending_qs=self.qs)

    # -- one agent step ---------------------------------------------------------------------------------------
    def _act(self):
        """(actions for every environment, ε): uniformly random until `learning_starts`, then ε-greedy."""
        if self.step < self.config.learning_starts:
            return self.rng.integers(0, self.num_actions, self.config.num_envs), 1.0
        epsilon = epsilon_at(self.step, self.config)
        observations = self.agent.observations(self.stacks) if self.stack > 1 else self.stacks[:, 0]
        return self.agent.act(observations, epsilon, self.rng), epsilon

    def _step_envs(self, actions):
        """Step every environment and store the transitions; returns (first frames after a reset, done, infos)."""
        frames, rewards, terminated, truncated, infos = self.envs.step(actions)
        done = terminated | truncated
        next_frames = frames.copy()
        for e in np.flatnonzero(done):
            next_frames[e] = infos["final_obs"][e]
        self.buffer.add_batch(actions, rewards, terminated, next_frames)
        self.stacks = np.concatenate([self.stacks[:, 1:], next_frames[:, None]], axis=1)
        self.step += self.config.num_envs
        return frames, done, infos

    def _end_episodes(self, frames, done, infos, epsilon):
        """Start the next game of each finished environment; log each finished whole game."""
        final_info = infos.get("final_info", {})
        for e in np.flatnonzero(done):
            self.buffer.start(e, frames[e])
            self.stacks[e] = frames[e]
            if "game_return" in final_info and final_info.get("_game_return", np.ones(len(done), bool))[e]:
                self.agent.episodes.assign_add(1)
                game_return = float(final_info["game_return"][e])
                self.recent_returns = (self.recent_returns + [game_return])[-100:]
                self.episodes_log.write(dict(env_step=self.step, episode=int(self.agent.episodes.numpy()),
                                             epsilon=f"{epsilon:.4f}", **{"return": game_return},
                                             length=int(final_info["game_length"][e])))
                with self.writer.as_default(step=self.step):
                    tf.summary.scalar("episode/return", game_return)

    def _learn(self):
        """One learner update per `train_freq` agent steps (in calls of `updates_per_call`); target sync."""
        config, agent = self.config, self.agent
        if self.step < config.learning_starts:
            return
        self.update_credit += config.num_envs / config.train_freq
        k = config.updates_per_call
        while self.update_credit >= k:
            self.update_credit -= k
            batches = [self.buffer.sample(self.global_batch) for _ in range(k)]
            loss, q = agent.update(*(np.stack(parts) for parts in zip(*batches)))
            self.losses.append(loss)
            self.qs.append(q)
        if self.step - int(agent.last_sync.numpy()) >= config.target_update:
            agent.sync_target()
            agent.last_sync.assign(self.step)

    def _log(self, epsilon):
        """A train.csv row every `log_every` agent steps (and at the end of training)."""
        config, agent, step = self.config, self.agent, self.step
        if step >= self.next_log or step >= config.steps:
            self.next_log = (step // config.log_every + 1) * config.log_every
            now = time.time()
            updates = int(agent.updates.numpy())
            losses, qs = self.losses, self.qs
            row = dict(env_step=step, frames=step * (4 if atari.is_atari(config.env) else 1), updates=updates,
                       loss=f"{np.mean(losses):.5f}" if losses else "", q_mean=f"{np.mean(qs):.4f}" if qs else "",
                       epsilon=f"{epsilon:.4f}",
                       env_steps_per_s=f"{(step - self.last_log_step) / (now - self.last_log_time):.1f}",
                       updates_per_s=f"{(updates - self.last_log_updates) / (now - self.last_log_time):.1f}",
                       episodes=int(agent.episodes.numpy()),
                       mean_return_100=f"{np.mean(self.recent_returns):.2f}" if self.recent_returns else "",
                       replay_size=len(self.buffer), wall_s=f"{now - self.started:.1f}")
            self.train_log.write(row)
            with self.writer.as_default(step=step):
                for key in ("loss", "q_mean", "epsilon", "env_steps_per_s", "updates_per_s", "mean_return_100"):
                    if row[key] != "":
                        tf.summary.scalar(f"train/{key}", float(row[key]))
            self.log(f"step {step:>9} | updates {updates:>8} | return(100) {row['mean_return_100'] or '-':>7} | "
                     f"loss {row['loss'] or '-':>8} | Q {row['q_mean'] or '-':>7} | ε {epsilon:.3f} | "
                     f"{row['env_steps_per_s']} steps/s, {row['updates_per_s']} updates/s")
            self.losses, self.qs = [], []
            self.last_log_time, self.last_log_step, self.last_log_updates = now, step, updates
        elif step >= self.end:  # the sitting ends between two rows: the pending losses go into the checkpoint
            self.log(f"step {step:>9} | updates {int(agent.updates.numpy()):>8} | stopping here; "
                     f"rerun the same command to resume")

    def _checkpoint(self):
        """A checkpoint every `checkpoint_every` agent steps and at the end of the sitting."""
        if self.step >= self.next_checkpoint or self.step >= self.end:
            self.next_checkpoint = (self.step // self.config.checkpoint_every + 1) * self.config.checkpoint_every
            path = save_checkpoint(self.agent, self.out, self.buffer, self.run_state,
                                   dict(atari.vector_env_state(self.envs), actor_stacks=self.stacks))
            if checkpoints.stop_requested() and self.step < self.config.steps:
                self.preempted = path

    def run(self):
        config = self.config
        self.log(f"DQN on {config.env}: {self.num_actions} actions, {config.num_envs} env(s), replay "
                 f"{config.buffer_size} ({self.buffer.nbytes / 2**20:.0f} MiB), {self.strategy.num_replicas_in_sync} "
                 f"replica(s), global batch {self.global_batch}, {'Double ' if config.double else ''}"
                 f"{'dueling ' if config.dueling else ''}DQN; agent steps {self.step} -> {self.end}")
        try:
            with checkpoints.stop_on_sigterm():
                while self.step < self.end:
                    actions, epsilon = self._act()
                    frames, done, infos = self._step_envs(actions)
                    self._end_episodes(frames, done, infos, epsilon)
                    self._learn()
                    self.agent.env_steps.assign(self.step)
                    if checkpoints.stop_requested():  # SIGTERM (preemption): save here and stop
                        self.end = self.step
                    self._log(epsilon)
                    self._checkpoint()
        finally:
            self.envs.close()
            self.episodes_log.close()
            self.train_log.close()
            self.writer.close()
        plot_training(self.out)
        if self.preempted:
            raise Preempted(f"stopped by SIGTERM at agent step {self.step}; saved {self.preempted}; rerun the same "
                            f"command to resume")
        return self.agent


def train(config, out, strategy="auto", stop_after=None, log=print):
    """Train (or resume) the run in `out` until `config.steps` agent steps.

    `stop_after` ends this call after that many agent steps (a budget for one sitting, or a simulated kill in
    tests); rerunning resumes."""
    strategy = distribute.get_strategy(strategy)  # before any other TF work
    keras.utils.set_random_seed(config.seed)
    return Runner(config, out, strategy, stop_after=stop_after, log=log).run()


def plot_training(out):
    """returns.png: game returns against agent steps, with a running mean."""
    import matplotlib.pyplot as plt

    from core import plots

    path = os.path.join(out, "episodes.csv")
    history = plots.read_history(path) if os.path.exists(path) else {}
    if not history:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(history["env_step"], history["return"], ".", alpha=0.4, label="episode")
    window = min(20, len(history["return"]))
    running = np.convolve(history["return"], np.ones(window) / window, mode="valid")
    ax.plot(history["env_step"][window - 1:], running, "-", label=f"mean of {window}")
    ax.set_xlabel("agent steps")
    ax.set_ylabel("return")
    ax.grid(alpha=0.3)
    ax.legend()
    return plots.save_figure(fig, os.path.join(out, "returns.png"))
