"""Deep Q-Networks (Mnih et al. 2013/2015), with Double DQN (van Hasselt et al.
2016) and dueling heads (Wang et al. 2016) as options.

The story of `train`:
  1. pick the tf.distribute strategy (first), build the online and target
     Q-networks, the optimizer and the step counters inside its scope;
  2. restore model, optimizer, replay buffer, counters, RNG state and the
     environments (emulators, wrappers, the actor's stacked frames) from the
     run folder's checkpoint when there is one: a killed run resumes exactly
     as if it had never stopped;
  3. loop: the actor picks ε-greedy actions for all vector environments at
     once, transitions go to the compact replay buffer; every `train_freq`
     agent steps the learner samples a batch and runs one update (a
     `tf.function` under the strategy: Huber loss on the TD error against
     r + γ (1 − terminal) Q_target(s', a*), a* = argmax of the target net, or
     of the online net for Double DQN); every `target_update` agent steps the
     target net copies the online one; ε decays linearly;
  4. log episodes and training statistics to CSV and TensorBoard, checkpoint
     every `checkpoint_every` steps and at the end.

Counting: an "agent step" is one action in one environment (4 Atari frames).
"""

import csv
import json
import os
import time
import zipfile
from dataclasses import asdict, dataclass, fields

import keras
import numpy as np
import tensorflow as tf

from apps.rl import atari
from apps.rl.replay import ReplayBuffer
from core import checkpoints, distribute
from core.checkpoints import CheckpointFolder, CorruptCheckpoint
from core.errors import Preempted, UserError, first_line
from core.registry import Registry


@dataclass
class DQNConfig:
    env: str = "ALE/Pong-v5"
    steps: int = 2_000_000           # agent steps in total (x4 frames on Atari)
    num_envs: int = 8
    buffer_size: int = 200_000        # frames (= transitions) kept, over all environments
    batch_size: int = 32              # per replica
    learning_rate: float = 1e-4
    optimizer: str = "adam"           # adam or rmsprop
    gamma: float = 0.99
    train_freq: int = 4               # agent steps per learner update
    updates_per_call: int = 1         # learner updates per tf.function call (amortizes dispatch on small nets)
    target_update: int = 8_000        # agent steps between target syncs
    learning_starts: int = 20_000     # agent steps of random play before learning
    eps_start: float = 1.0
    eps_end: float = 0.01
    eps_decay_steps: int = 250_000    # agent steps of linear decay
    double: bool = True
    dueling: bool = False
    network: str = "nature"           # nature (Atari) or mlp
    hidden: int = 512
    huber_delta: float = 1.0
    max_grad_norm: float = 10.0
    seed: int = 0
    log_every: int = 5_000            # agent steps between train.csv rows
    checkpoint_every: int = 100_000   # agent steps between checkpoints
    async_envs: bool = False
    jit_compile: bool = True          # XLA for the update (one replica only): ~30% more updates/s on CPU

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


PRESETS = {
    # Set for a 500k-frame budget (125k agent steps): replay ratio 1, short ε schedule.
    "pong": dict(env="ALE/Pong-v5", steps=125_000, num_envs=8, buffer_size=100_000, train_freq=1,
                 updates_per_call=1, target_update=2_000, learning_starts=10_000, eps_decay_steps=50_000,
                 learning_rate=1e-4, log_every=5_000, checkpoint_every=25_000),
    "breakout": dict(env="ALE/Breakout-v5", steps=10_000_000, buffer_size=500_000),
    # Learns CartPole in about a minute on two CPU cores.
    "cartpole": dict(env="CartPole-v1", steps=15_000, num_envs=8, buffer_size=20_000, batch_size=64,
                     learning_rate=1e-3, train_freq=2, updates_per_call=4, target_update=500,
                     learning_starts=1_000, eps_decay_steps=6_000, eps_end=0.02, network="mlp", hidden=128,
                     gamma=0.98, log_every=1_000, checkpoint_every=15_000, double=True),
}

NETWORKS = Registry("Q-network")


@keras.saving.register_keras_serializable(package="rl")
class DuelingCombine(keras.layers.Layer):
    """Q = V + A − mean(A) (Wang et al. 2016, eq. 9)."""

    def call(self, inputs):
        value, advantages = inputs
        return value + advantages - keras.ops.mean(advantages, axis=-1, keepdims=True)


def _head(x, num_actions, hidden, dueling):
    if not dueling:
        x = keras.layers.Dense(hidden, activation="relu")(x)
        return keras.layers.Dense(num_actions, name="q_values")(x)
    value = keras.layers.Dense(1)(keras.layers.Dense(hidden, activation="relu")(x))
    advantages = keras.layers.Dense(num_actions)(keras.layers.Dense(hidden, activation="relu")(x))
    return DuelingCombine(name="q_values")([value, advantages])


@NETWORKS.register("nature")
def nature_cnn(input_shape, num_actions, hidden=512, dueling=False):
    """The Nature DQN: 32 8x8/4, 64 4x4/2, 64 3x3/1 convolutions, 512 units. Input uint8 frames."""
    inputs = keras.Input(input_shape, dtype="uint8", name="frames")
    x = keras.layers.Rescaling(1.0 / 255)(keras.ops.cast(inputs, "float32"))
    x = keras.layers.Conv2D(32, 8, strides=4, activation="relu")(x)
    x = keras.layers.Conv2D(64, 4, strides=2, activation="relu")(x)
    x = keras.layers.Conv2D(64, 3, strides=1, activation="relu")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, _head(x, num_actions, hidden, dueling), name="nature_dqn")


@NETWORKS.register("mlp")
def mlp(input_shape, num_actions, hidden=128, dueling=False):
    inputs = keras.Input(input_shape, dtype="float32", name="observations")
    x = keras.layers.Dense(hidden, activation="relu")(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, _head(x, num_actions, hidden, dueling), name="mlp_dqn")


def td_targets(rewards, terminals, next_q_target, next_q_online, gamma, double):
    """y = r + γ (1 − terminal) Q_target(s', a*), a* = argmax_a Q_online(s', a) (Double DQN)
    or argmax_a Q_target(s', a) (DQN). Works on NumPy arrays and tensors."""
    selector = next_q_online if double else next_q_target
    best = tf.argmax(selector, axis=-1, output_type=tf.int32)
    next_value = tf.gather(next_q_target, best, batch_dims=1)
    return tf.cast(rewards, tf.float32) + gamma * (1.0 - tf.cast(terminals, tf.float32)) * next_value


def epsilon_at(step, config):
    fraction = min(1.0, step / max(1, config.eps_decay_steps))
    return config.eps_start + fraction * (config.eps_end - config.eps_start)


def huber(errors, delta):
    abs_errors = tf.abs(errors)
    quadratic = tf.minimum(abs_errors, delta)
    return 0.5 * quadratic ** 2 + delta * (abs_errors - quadratic)


class Agent:
    """Online and target networks, optimizer and counters, built in the strategy's scope."""

    def __init__(self, config, frame_shape, stack, num_actions, strategy):
        self.config, self.stack, self.num_actions, self.strategy = config, stack, num_actions, strategy
        self.input_shape = (tuple(frame_shape) + (stack,)) if stack > 1 else tuple(frame_shape)
        build = NETWORKS.get(config.network)
        with strategy.scope():
            self.online = build(self.input_shape, num_actions, config.hidden, config.dueling)
            self.target = build(self.input_shape, num_actions, config.hidden, config.dueling)
            if config.optimizer == "adam":
                # eps as in Hessel et al. (Rainbow) for Adam on DQN
                self.optimizer = keras.optimizers.Adam(config.learning_rate, epsilon=1.5e-4)
            elif config.optimizer == "rmsprop":
                # Nature DQN: RMSProp, momentum 0, centered, eps 0.01 (in the squared-gradient sense)
                self.optimizer = keras.optimizers.RMSprop(config.learning_rate, rho=0.95, epsilon=0.01,
                                                          centered=True)
            else:
                raise UserError(f"unknown optimizer '{config.optimizer}'; choose adam or rmsprop")
            self.optimizer.build(self.online.trainable_variables)
            self.env_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="env_steps")
            self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="updates")
            self.episodes = tf.Variable(0, dtype=tf.int64, trainable=False, name="episodes")
            self.last_sync = tf.Variable(0, dtype=tf.int64, trainable=False, name="last_sync")
        self.sync_target()
        self._q = tf.function(lambda x: self.online(x, training=False), reduce_retracing=True)
        self._distributed_updates = {}  # one tf.function per number of updates per call

    # -- acting -----------------------------------------------------------------------------------
    def observations(self, window):
        """(batch, k, *frame) stacks -> the network's input layout (frames last)."""
        if self.stack == 1:
            return window[:, 0]
        perm = [0] + list(range(2, len(window.shape))) + [1]
        return tf.transpose(window, perm)

    def q_values(self, observations):
        return self._q(tf.convert_to_tensor(observations)).numpy()

    def act(self, observations, epsilon, rng):
        greedy = self.q_values(observations).argmax(axis=1)
        explore = rng.random(len(greedy)) < epsilon
        return np.where(explore, rng.integers(0, self.num_actions, len(greedy)), greedy)

    # -- learning ---------------------------------------------------------------------------------
    def sync_target(self):
        for target, online in zip(self.target.weights, self.online.weights):
            target.assign(online)

    def _replica_step(self, window, actions, rewards, terminals):
        config = self.config
        global_batch = config.batch_size * self.strategy.num_replicas_in_sync
        observations = self.observations(window[:, :-1])
        next_observations = self.observations(window[:, 1:])
        next_q_target = self.target(next_observations, training=False)
        next_q_online = self.online(next_observations, training=False) if config.double else next_q_target
        targets = tf.stop_gradient(td_targets(rewards, terminals, next_q_target, next_q_online,
                                              config.gamma, config.double))
        with tf.GradientTape() as tape:
            q = self.online(observations, training=True)
            q_taken = tf.gather(q, actions, batch_dims=1)
            loss = tf.reduce_sum(huber(targets - q_taken, config.huber_delta)) / global_batch
        gradients = tape.gradient(loss, self.online.trainable_variables)
        if config.max_grad_norm:
            gradients, _ = tf.clip_by_global_norm(gradients, config.max_grad_norm)
        self.optimizer.apply_gradients(zip(gradients, self.online.trainable_variables))
        self.updates.assign_add(1)
        return loss, tf.reduce_mean(q_taken)

    def _distributed_step(self, count, window, actions, rewards, terminals):
        """`count` updates in a row (the leading dimension; unrolled: one strategy.run each)."""
        losses, qs = [], []
        for i in range(count):
            loss, q = self.strategy.run(lambda w, a, r, d, i=i: self._replica_step(w[i], a[i], r[i], d[i]),
                                        args=(window, actions, rewards, terminals))
            losses.append(self.strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None))
            qs.append(self.strategy.reduce(tf.distribute.ReduceOp.MEAN, q, axis=None))
        return tf.reduce_mean(tf.stack(losses)), tf.reduce_mean(tf.stack(qs))

    def update(self, window, actions, rewards, terminals):
        """Learner updates on global batches of NumPy arrays, split across replicas.

        One batch: window (B, k+1, *frame), actions/rewards/terminals (B,). Several
        updates in one call: the same with a leading K dimension. Returns the mean
        loss and mean Q(s, a) of the batch(es)."""
        arrays = [np.asarray(window), np.asarray(actions, np.int32), np.asarray(rewards, np.float32),
                  np.asarray(terminals, np.float32)]
        if arrays[1].ndim == 1:
            arrays = [a[None] for a in arrays]
        replicas = self.strategy.num_replicas_in_sync
        if replicas == 1:
            values = tuple(tf.convert_to_tensor(a) for a in arrays)
        else:
            per = arrays[1].shape[1] // replicas

            def split(context):
                i = context.replica_id_in_sync_group
                return tuple(tf.convert_to_tensor(a[:, i * per:(i + 1) * per]) for a in arrays)

            values = self.strategy.experimental_distribute_values_from_function(split)
        count = arrays[1].shape[0]
        if count not in self._distributed_updates:
            jit = self.config.jit_compile and replicas == 1
            self._distributed_updates[count] = tf.function(
                lambda *args: self._distributed_step(count, *args), reduce_retracing=True, jit_compile=jit)
        loss, q = self._distributed_updates[count](*values)
        return float(loss), float(q)

    # -- checkpoints ------------------------------------------------------------------------------
    def checkpoint(self):
        return tf.train.Checkpoint(online=self.online, target=self.target, optimizer=self.optimizer,
                                   env_steps=self.env_steps, updates=self.updates, episodes=self.episodes,
                                   last_sync=self.last_sync)


# ---------------------------------------------------------------------------------------------------
# Run folders

CONFIG_FILE = "config.json"


def _save_config(out, config):
    from core.training import make_output_dir

    make_output_dir(out)  # a folder that cannot be made or written: one line, before any work
    path = os.path.join(out, CONFIG_FILE)
    if os.path.exists(path):
        old = load_run_config(out)
        if old.env != config.env or old.network != config.network or old.dueling != config.dueling:
            raise UserError(f"{out} holds another run (env={old.env}, network={old.network}, "
                            f"dueling={old.dueling}); pass a different --out or delete it")
    try:
        with open(path + ".tmp", "w") as f:
            json.dump(asdict(config), f, indent=2, sort_keys=True)
        os.replace(path + ".tmp", path)
    except OSError as error:
        raise UserError(f"cannot write {path}: {checkpoints.write_error_reason(error)}") from None


def read_dqn_config(path):
    """The DQNConfig in JSON file `path`; a file that is not one (binary, empty, truncated, a list,
    another app's config) is a one-line `UserError`."""
    from core.training import read_json_object

    values = read_json_object(path, "DQN run's config (a JSON object)")
    if "env" not in values:
        raise UserError(f"{path} is not a DQN run's config (it has no 'env'; keys: "
                        f"{', '.join(sorted(values)[:6]) or 'none'}); pass the right --out")
    try:
        return DQNConfig.from_dict(values)
    except TypeError as error:
        raise UserError(f"corrupt {path}: {error}") from None


def load_run_config(out):
    path = os.path.join(out, CONFIG_FILE)
    if not os.path.exists(path):
        raise UserError(f"no DQN run in {out} (missing {CONFIG_FILE}); run 'dqn train' first or pass --out")
    return read_dqn_config(path)


def build_agent(config, strategy):
    frame_shape, _, stack, num_actions = atari.observation_spec(config.env)
    return Agent(config, frame_shape, stack, num_actions, strategy)


# Checkpoints: checkpoints/step-<N>/ holds everything a run needs to go on exactly as if it had
# never stopped: model.* (online and target nets, optimizer slots, counters: tf.train.Checkpoint),
# replay.npz (the buffer and its sampler RNG), envs.npz (every sub-environment's emulator and
# wrapper state, the vector env's autoreset flags, the actor's stacked observations) and
# state.json (actor RNG, recent returns, update credit, the not yet logged losses). The last two
# are kept, each written under a temporary name and renamed once complete (core.checkpoints): a
# kill at any moment leaves them whole, and a damaged newest one is reported in one line and the
# one before it used.
CHECKPOINTS = "checkpoints"
CHECKPOINT_FILES = ("model.index", "state.json")  # what every use needs; training also reads the .npz files


def _checkpoint_folder(out):
    return CheckpointFolder(os.path.join(out, CHECKPOINTS), "step-")


def _step_of(path):
    return int(os.path.basename(path)[len("step-"):])


def latest_checkpoint(out):
    """The folder of the newest complete checkpoint of run `out` (not checked), or None."""
    return _checkpoint_folder(out).newest()


def _restore_model(agent, prefix):
    """Raises CorruptCheckpoint when the checkpoint cannot be read into the agent."""
    try:
        agent.checkpoint().read(prefix).assert_existing_objects_matched()
    except (tf.errors.OpError, ValueError, AssertionError, IndexError, KeyError) as error:  # TF raises all of these
        raise CorruptCheckpoint(first_line(error)) from None


def _load_checkpoint(agent, path, buffer, with_envs):
    """Read checkpoint folder `path` into agent (and buffer); its run state, or CorruptCheckpoint."""
    needed = CHECKPOINT_FILES + (("replay.npz",) if buffer is not None else ()) + (("envs.npz",) if with_envs else ())
    missing = [f for f in needed if not os.path.exists(os.path.join(path, f))]
    if missing:
        raise CorruptCheckpoint(f"{', '.join(missing)} missing")
    _restore_model(agent, os.path.join(path, "model"))
    try:
        with open(os.path.join(path, "state.json")) as f:
            state = json.load(f)
        state["envs"] = None
        if with_envs:
            with np.load(os.path.join(path, "envs.npz"), allow_pickle=False) as data:
                state["envs"] = dict(data)
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError) as error:
        raise CorruptCheckpoint(first_line(error)) from None
    counters = {"folder": _step_of(path), "state.json": state.get("env_steps"), "model": int(agent.env_steps.numpy())}
    if len(set(counters.values())) != 1:
        raise CorruptCheckpoint("its agent step counters disagree (" +
                                ", ".join(f"{k} {v}" for k, v in counters.items()) + ")")
    if buffer is not None:
        try:
            buffer.load(os.path.join(path, "replay.npz"))
        except UserError as error:
            raise CorruptCheckpoint(str(error)) from None
    return state


def restore(agent, out, buffer=None, with_envs=False, log=print):
    """Load the newest usable checkpoint of `out` into agent (and buffer): a damaged newest one is
    reported through `log` and the one before used. Returns None when there is none, else the run
    state of state.json, with the arrays of envs.npz as "envs" when asked (None for a checkpoint
    of the older flat layout, which did not save the environments)."""
    folder = _checkpoint_folder(out)
    if not folder.names():
        return _restore_flat_layout(agent, out, buffer)
    return folder.restore(lambda path: _load_checkpoint(agent, path, buffer, with_envs),
                          label=lambda state: f"agent step {state['env_steps']}", log=log)


def _restore_flat_layout(agent, out, buffer):
    """Checkpoints written before the environments were saved (ckpt-N.*, state.json and
    replay.npz directly in checkpoints/): learner and replay only."""
    folder = os.path.join(out, CHECKPOINTS)
    prefix = tf.train.latest_checkpoint(folder)
    if prefix is None:
        return None
    try:
        _restore_model(agent, prefix)
        with open(os.path.join(folder, "state.json")) as f:
            state = json.load(f)
    except (CorruptCheckpoint, OSError, ValueError) as error:
        raise UserError(f"corrupt or partial checkpoint {prefix} ({first_line(error)}); delete {folder} "
                        f"to start over") from None
    if buffer is not None:
        buffer.load(os.path.join(folder, "replay.npz"))
    return dict(state, envs=None)


def save_checkpoint(agent, out, buffer, state, envs_state):
    """Write checkpoints/step-<N>/ completely; keep it and the one before (core.checkpoints)."""

    def write(folder):
        agent.checkpoint().write(os.path.join(folder, "model"))
        buffer.save(os.path.join(folder, "replay.npz"))
        np.savez(os.path.join(folder, "envs.npz"), **envs_state)
        with open(os.path.join(folder, "state.json"), "w") as f:
            json.dump(state, f)

    return _checkpoint_folder(out).save(f"step-{int(agent.env_steps.numpy()):012d}", write)


def checkpoint_contents(out):
    """Every value of the newest checkpoint as {name: array}: the TF variables (by checkpoint key),
    "replay/<field>", "envs/<key>" and "state/<key>" (to compare two runs exactly)."""
    path = latest_checkpoint(out)
    if path is None:
        raise UserError(f"no checkpoint in {os.path.join(out, CHECKPOINTS)}")
    reader = tf.train.load_checkpoint(os.path.join(path, "model"))
    contents = {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()
                if not key.startswith("_CHECKPOINTABLE_OBJECT_GRAPH")}
    for prefix, file in (("replay", "replay.npz"), ("envs", "envs.npz")):
        with np.load(os.path.join(path, file), allow_pickle=False) as data:
            contents.update({f"{prefix}/{key}": data[key] for key in data.files})
    with open(os.path.join(path, "state.json")) as f:
        contents.update({f"state/{key}": value for key, value in json.load(f).items()})
    return contents


class CSVLog:
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


def train(config, out, strategy="auto", stop_after=None, log=print):
    """Train (or resume) the run in `out` until `config.steps` agent steps.

    `stop_after` ends this call after that many agent steps (a budget for one
    sitting, or a simulated kill in tests); rerunning resumes."""
    strategy = distribute.get_strategy(strategy)  # before any other TF work
    keras.utils.set_random_seed(config.seed)
    frame_shape, dtype, stack, num_actions = atari.observation_spec(config.env)
    if config.batch_size * strategy.num_replicas_in_sync > config.buffer_size:
        raise UserError("batch larger than the replay buffer")
    _save_config(out, config)
    agent = Agent(config, frame_shape, stack, num_actions, strategy)
    buffer = ReplayBuffer(config.buffer_size, frame_shape, config.num_envs, stack, dtype, seed=config.seed)
    state = restore(agent, out, buffer, with_envs=True, log=log)
    rng = np.random.default_rng(config.seed + 1)
    if state is not None:
        rng.bit_generator.state = state["rng"]
        log(f"resumed {out} at agent step {int(agent.env_steps.numpy())} "
            f"({int(agent.updates.numpy())} updates, {len(buffer)} transitions in replay)")
    step = int(agent.env_steps.numpy())
    for name in ("episodes.csv", "train.csv"):  # rows logged after the checkpoint are logged again
        checkpoints.trim_csv(os.path.join(out, name), lambda row: int(row["env_step"]) <= step)
    episodes_log = CSVLog(os.path.join(out, "episodes.csv"), ["env_step", "episode", "return", "length", "epsilon"])
    train_log = CSVLog(os.path.join(out, "train.csv"),
                       ["env_step", "frames", "updates", "loss", "q_mean", "epsilon", "env_steps_per_s",
                        "updates_per_s", "episodes", "mean_return_100", "replay_size", "wall_s"])
    writer = tf.summary.create_file_writer(os.path.join(out, "logs"))
    frame_factor = 4 if atari.is_atari(config.env) else 1
    global_batch = distribute.global_batch_size(config.batch_size, strategy)
    n = config.num_envs

    envs = atari.make_vector_env(config.env, n, seed=config.seed, asynchronous=config.async_envs)
    frames, _ = envs.reset(seed=config.seed)
    stacks = np.repeat(frames[:, None], stack, axis=1)  # (n, k, *frame): the reset rule of the buffer
    if state is not None and state["envs"] is not None:
        # mid-game, where the checkpoint left off; the buffer already holds the current frames
        atari.set_vector_env_state(envs, state["envs"])
        stacks = state["envs"]["actor_stacks"]
        if stacks.shape != (n, stack) + tuple(frame_shape):
            raise UserError(f"the checkpoint's actor observations have shape {stacks.shape}, expected "
                            f"{(n, stack) + tuple(frame_shape)} (different settings?)")
    else:
        if state is not None:  # a checkpoint of the older layout, without the environments: new games
            log("this checkpoint holds no environment state: the games restart from a reset")
            frames, _ = envs.reset(seed=config.seed + step)
            stacks = np.repeat(frames[:, None], stack, axis=1)
        for e in range(n):
            buffer.start(e, frames[e])

    end = config.steps if stop_after is None else min(config.steps, step + stop_after)
    recent_returns = list(state["recent_returns"]) if state else []
    # losses and mean Qs since the last train.csv row (kept across a resume, so rows match an uninterrupted run)
    losses, qs = (list(state.get("pending_losses", [])), list(state.get("pending_qs", []))) if state else ([], [])
    update_credit = float(state["update_credit"]) if state else 0.0
    started, last_log_time, last_log_step, last_log_updates = time.time(), time.time(), step, int(agent.updates.numpy())
    next_log = (step // config.log_every + 1) * config.log_every
    next_checkpoint = (step // config.checkpoint_every + 1) * config.checkpoint_every
    log(f"DQN on {config.env}: {num_actions} actions, {n} env(s), replay {config.buffer_size} "
        f"({buffer.nbytes / 2**20:.0f} MiB), {strategy.num_replicas_in_sync} replica(s), global batch {global_batch}, "
        f"{'Double ' if config.double else ''}{'dueling ' if config.dueling else ''}DQN; "
        f"agent steps {step} -> {end}")
    preempted = None  # the checkpoint saved on SIGTERM
    try:
        with checkpoints.stop_on_sigterm():
            while step < end:
                epsilon = epsilon_at(step, config)
                actions = agent.act(agent.observations(stacks) if stack > 1 else stacks[:, 0], epsilon, rng) \
                    if step >= config.learning_starts else rng.integers(0, num_actions, n)
                if step < config.learning_starts:
                    epsilon = 1.0
                frames, rewards, terminated, truncated, infos = envs.step(actions)
                done = terminated | truncated
                next_frames = frames.copy()
                if done.any():
                    for e in np.flatnonzero(done):
                        next_frames[e] = infos["final_obs"][e]
                buffer.add_batch(actions, rewards, terminated, next_frames)
                stacks = np.concatenate([stacks[:, 1:], next_frames[:, None]], axis=1)
                step += n
                for e in np.flatnonzero(done):
                    buffer.start(e, frames[e])
                    stacks[e] = frames[e]
                    final_info = infos.get("final_info", {})
                    if "game_return" in final_info and final_info.get("_game_return", np.ones(n, bool))[e]:
                        agent.episodes.assign_add(1)
                        game_return = float(final_info["game_return"][e])
                        recent_returns = (recent_returns + [game_return])[-100:]
                        episodes_log.write(dict(env_step=step, episode=int(agent.episodes.numpy()),
                                                epsilon=f"{epsilon:.4f}", **{"return": game_return},
                                                length=int(final_info["game_length"][e])))
                        with writer.as_default(step=step):
                            tf.summary.scalar("episode/return", game_return)
                if step >= config.learning_starts:
                    update_credit += n / config.train_freq
                    k = config.updates_per_call
                    while update_credit >= k:
                        update_credit -= k
                        batches = [buffer.sample(global_batch) for _ in range(k)]
                        loss, q = agent.update(*(np.stack(parts) for parts in zip(*batches)))
                        losses.append(loss)
                        qs.append(q)
                    if step - int(agent.last_sync.numpy()) >= config.target_update:
                        agent.sync_target()
                        agent.last_sync.assign(step)
                agent.env_steps.assign(step)
                if checkpoints.stop_requested():  # SIGTERM (preemption): save here and stop
                    end = step
                if step >= next_log or step >= config.steps:
                    next_log = (step // config.log_every + 1) * config.log_every
                    now = time.time()
                    updates = int(agent.updates.numpy())
                    row = dict(env_step=step, frames=step * frame_factor, updates=updates,
                               loss=f"{np.mean(losses):.5f}" if losses else "",
                               q_mean=f"{np.mean(qs):.4f}" if qs else "", epsilon=f"{epsilon:.4f}",
                               env_steps_per_s=f"{(step - last_log_step) / (now - last_log_time):.1f}",
                               updates_per_s=f"{(updates - last_log_updates) / (now - last_log_time):.1f}",
                               episodes=int(agent.episodes.numpy()),
                               mean_return_100=f"{np.mean(recent_returns):.2f}" if recent_returns else "",
                               replay_size=len(buffer), wall_s=f"{now - started:.1f}")
                    train_log.write(row)
                    with writer.as_default(step=step):
                        for key in ("loss", "q_mean", "epsilon", "env_steps_per_s", "updates_per_s", "mean_return_100"):
                            if row[key] != "":
                                tf.summary.scalar(f"train/{key}", float(row[key]))
                    log(f"step {step:>9} | updates {updates:>8} | return(100) {row['mean_return_100'] or '-':>7} | "
                        f"loss {row['loss'] or '-':>8} | Q {row['q_mean'] or '-':>7} | ε {epsilon:.3f} | "
                        f"{row['env_steps_per_s']} steps/s, {row['updates_per_s']} updates/s")
                    losses, qs = [], []
                    last_log_time, last_log_step, last_log_updates = now, step, updates
                elif step >= end:  # the sitting ends between two rows: the pending losses go into the checkpoint
                    log(f"step {step:>9} | updates {int(agent.updates.numpy()):>8} | stopping here; "
                        f"rerun the same command to resume")
                if step >= next_checkpoint or step >= end:
                    next_checkpoint = (step // config.checkpoint_every + 1) * config.checkpoint_every
                    run_state = dict(rng=rng.bit_generator.state, recent_returns=recent_returns,
                                     update_credit=update_credit, env_steps=step, pending_losses=losses, pending_qs=qs)
                    path = save_checkpoint(agent, out, buffer, run_state,
                                           dict(atari.vector_env_state(envs), actor_stacks=stacks))
                    if checkpoints.stop_requested() and step < config.steps:
                        preempted = path
    finally:
        envs.close()
        episodes_log.close()
        train_log.close()
        writer.close()
    plot_training(out)
    if preempted:
        raise Preempted(f"stopped by SIGTERM at agent step {step}; saved {preempted}; rerun the same command "
                        f"to resume")
    return agent


def plot_training(out):
    """returns.png: game returns against agent steps, with a running mean."""
    from core import plots
    import matplotlib.pyplot as plt

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


def load_agent(out, strategy="default"):
    """The trained agent of a run folder (model weights from the newest checkpoint)."""
    config = load_run_config(out)
    strategy = distribute.get_strategy(strategy)
    agent = build_agent(config, strategy)
    if restore(agent, out) is None:
        raise UserError(f"no checkpoint in {os.path.join(out, 'checkpoints')}; run 'dqn train' first")
    return config, agent


# ---------------------------------------------------------------------------------------------------
# Evaluation, rendering, export and play

def run_episodes(policy, env_id, episodes, epsilon, stack, num_actions, *, seed=0, max_steps=None,
                 record_first=False):
    """Play whole games (evaluation wrappers: no episodic life, no clipping) with an ε-greedy policy.

    `policy(observations)` maps a batch of stacked observations to greedy actions.
    Returns (returns, lengths, rgb frames of the first episode when `record_first`)."""
    rng = np.random.default_rng(seed)
    returns, lengths, frames_rgb = [], [], []
    for episode in range(episodes):
        record = record_first and episode == 0
        env = atari.make_env(env_id, training=False, seed=seed + episode, render=record and atari.is_atari(env_id))
        try:
            frame, _ = env.reset(seed=seed + episode)
            stacked = np.repeat(frame[None], stack, axis=0)
            total, length = 0.0, 0
            while True:
                if record:
                    frames_rgb.append(atari.render(env))
                observation = np.moveaxis(stacked, 0, -1) if stack > 1 else stacked[0]
                action = int(policy(observation[None])[0]) if rng.random() >= epsilon \
                    else int(rng.integers(num_actions))
                frame, reward, terminated, truncated, _ = env.step(action)
                total += reward
                length += 1
                stacked = np.concatenate([stacked[1:], frame[None]])
                if terminated or truncated or (max_steps and length >= max_steps):
                    break
            if record:
                frames_rgb.append(atari.render(env))
        finally:
            env.close()
        returns.append(total)
        lengths.append(length)
    return np.array(returns), np.array(lengths), frames_rgb


def save_gif(frames, path, every=2, max_frames=600, fps=30):
    """An animated GIF of (every `every`-th of at most `max_frames`) RGB frames."""
    from PIL import Image

    chosen = frames[:max_frames * every:every]
    images = [Image.fromarray(np.asarray(f)) for f in chosen]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 * every / fps), loop=0)
    return path


def save_strip(frames, path, count=8, title=None):
    """A PNG strip of `count` frames spread over the episode."""
    from core import plots

    picks = np.linspace(0, len(frames) - 1, min(count, len(frames))).astype(int)
    return plots.image_grid(np.stack([frames[i] for i in picks]), [f"step {i}" for i in picks], path,
                            columns=len(picks), title=title)


def evaluate(out, episodes=10, epsilon=0.05, seed=123, max_steps=None, render=True, log=print):
    """Mean return of the trained Q-network over whole games with ε-greedy (ε=0.05) play;
    the first episode is rendered to episode.gif and episode_strip.png in `out`."""
    config, agent = load_agent(out)
    start = time.time()
    returns, lengths, frames = run_episodes(lambda x: agent.q_values(x).argmax(axis=1), config.env, episodes,
                                            epsilon, agent.stack, agent.num_actions, seed=seed,
                                            max_steps=max_steps, record_first=render)
    steps = int(lengths.sum())
    report = dict(env=config.env, episodes=episodes, epsilon=epsilon, mean_return=float(returns.mean()),
                  std_return=float(returns.std()), returns=returns.tolist(), mean_length=float(lengths.mean()),
                  env_step=int(agent.env_steps.numpy()), eval_steps_per_s=steps / (time.time() - start))
    if render and frames:
        report["gif"] = save_gif(frames, os.path.join(out, "episode.gif"))
        report["strip"] = save_strip(frames, os.path.join(out, "episode_strip.png"),
                                     title=f"{config.env}: first evaluation episode, return {returns[0]:g}")
    with open(os.path.join(out, "evaluation.json"), "w") as f:
        json.dump(report, f, indent=2)
    log(f"{config.env}: mean return {report['mean_return']:.2f} ± {report['std_return']:.2f} over {episodes} "
        f"episodes (ε={epsilon}), after {report['env_step']} agent steps")
    return report


class GreedyPolicy(keras.layers.Layer):
    """argmax_a Q(s, a) as int32 (part of the exported signature)."""

    def call(self, q):
        # tf.argmax, not keras.ops.argmax: the latter adds a -0.0 fix-up (BitwiseAnd) TFLite lacks
        return tf.argmax(q, axis=-1, output_type=tf.int32)


def policy_model(agent):
    """stacked observations -> (Q-values, greedy action)."""
    inputs = keras.Input(agent.input_shape, dtype=agent.online.inputs[0].dtype, name="frames")
    q = agent.online(inputs)
    return keras.Model(inputs, [q, GreedyPolicy()(q)], name="dqn_policy")


def sample_observations(config, agent, count=64, seed=0):
    """Real stacked observations from random play (the parity and calibration batch)."""
    env = atari.make_env(config.env, training=False, seed=seed)
    rng = np.random.default_rng(seed)
    frame, _ = env.reset(seed=seed)
    stacked = np.repeat(frame[None], agent.stack, axis=0)
    observations = []
    try:
        while len(observations) < count:
            frame, _, terminated, truncated, _ = env.step(int(rng.integers(agent.num_actions)))
            stacked = np.concatenate([stacked[1:], frame[None]])
            observations.append(np.moveaxis(stacked, 0, -1) if agent.stack > 1 else stacked[0])
            if terminated or truncated:
                frame, _ = env.reset()
                stacked = np.repeat(frame[None], agent.stack, axis=0)
    finally:
        env.close()
    return np.stack(observations)


def export(out, export_dir="saved_models/rl/dqn", version=None, kinds=("float", "dynamic"), log=print):
    """SavedModel (signature `serving_default`: frames -> q_values, action) and float + dynamic-range
    TFLite files, checked on real observations: float must match the SavedModel's Q-values to 1e-4
    (relative to their scale) and pick the same actions wherever the best two Q-values differ by more
    than that; the dynamic-range file's Q error and action agreement are reported."""
    from core import export as core_export

    config, agent = load_agent(out)
    observations = sample_observations(config, agent)

    def parity(kind, reference, candidate):
        scale = 1.0 + float(np.abs(reference["q_values"]).max())
        top2 = np.sort(reference["q_values"], axis=1)[:, -2:]
        decisive = (top2[:, 1] - top2[:, 0]) > 1e-4 * scale
        diff = float(np.abs(candidate["q_values"] - reference["q_values"]).max())
        agreement = float((candidate["action"] == reference["action"]).mean())
        problem = None
        if kind == "float" and (diff > 1e-4 * scale or
                                np.any(candidate["action"][decisive] != reference["action"][decisive])):
            problem = f"in Q by {diff:.3g}, actions agree on {agreement:.1%}"
        return {"q_max_abs_diff": diff, "action_agreement": agreement}, problem

    report = core_export.export_model(policy_model(agent), export_dir, input_names=["frames"],
                                      output_names=["q_values", "action"], sample_inputs={"frames": observations},
                                      version=version, kinds=kinds, check=parity, log=log,
                                      extra_files={"dqn_config.json": json.dumps(asdict(config), indent=2)})
    served = report["saved_model_outputs"]["q_values"]
    report["saved_model_vs_keras"] = float(np.abs(served - agent.q_values(observations)).max())
    log(f"SavedModel: {report['saved_model']}")
    for kind, path in report["tflite"].items():
        figures = report["parity"][kind]
        log(f"TFLite {kind}: {path} (max |ΔQ| {figures['q_max_abs_diff']:.2g}, "
            f"same action {figures['action_agreement']:.0%})")
    return report


def play(tflite_path, episodes=3, epsilon=0.0, seed=7, max_steps=None, gif=None, env_id=None, log=print):
    """Run the exported TFLite policy (its `action` output) in the environment."""
    from core import export as core_export

    if not os.path.exists(tflite_path):
        raise UserError(f"no such TFLite file: {tflite_path}; run 'dqn export' first")
    if env_id is None:
        config_path = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(tflite_path)))),
                                   os.path.basename(os.path.dirname(os.path.abspath(tflite_path))), "dqn_config.json")
        if not os.path.exists(config_path):
            raise UserError(f"cannot find the environment of {tflite_path} ({config_path}); pass --env")
        env_id = read_dqn_config(config_path).env
    runner = core_export.tflite_signature_runner(tflite_path, inputs=["frames"], what="a DQN policy")
    frame_shape, dtype, stack, num_actions = atari.observation_spec(env_id)

    def policy(observations):
        return runner(frames=observations.astype(dtype))["action"]

    returns, lengths, frames = run_episodes(policy, env_id, episodes, epsilon, stack, num_actions, seed=seed,
                                            max_steps=max_steps, record_first=gif is not None)
    log(f"{env_id} with {tflite_path}: returns {returns.tolist()} (mean {returns.mean():.2f}), "
        f"lengths {lengths.tolist()}")
    result = {"returns": returns.tolist(), "lengths": lengths.tolist(), "env": env_id}
    if gif is not None and frames:
        result["gif"] = save_gif(frames, gif)
        log(f"GIF: {result['gif']}")
    return result
