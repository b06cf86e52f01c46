"""The DQN agent: online and target Q-networks, the TD target (Double DQN as an option), ε-greedy acting and
the learner update under a tf.distribute strategy."""

import numpy as np
import tensorflow as tf

from apps.rl import atari
from apps.rl.dqn.networks import NETWORKS
from core import optimizers, precision
from core.errors import UserError


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
        if config.precision == "mixed_float16":
            raise UserError("--precision mixed_float16: the DQN update's own GradientTape does not scale its loss, "
                            "so float16 gradients would underflow; use mixed_bfloat16 (it needs no loss scaling)")
        with strategy.scope(), precision.policy(config.precision):
            self.online = build(self.input_shape, num_actions, config.hidden, config.dueling)
            self.target = build(self.input_shape, num_actions, config.hidden, config.dueling)
            # The global-norm clip applies to the gradient summed over the replicas (core.optimizers).
            clip = dict(global_clipnorm=config.max_grad_norm or None)
            if config.optimizer == "adam":
                # eps as in Hessel et al. (Rainbow) for Adam on DQN
                self.optimizer = optimizers.Adam(config.learning_rate, epsilon=1.5e-4, **clip)
            elif config.optimizer == "rmsprop":
                # Nature DQN: RMSProp, momentum 0, centered, eps 0.01 (in the squared-gradient sense)
                self.optimizer = optimizers.RMSprop(config.learning_rate, rho=0.95, epsilon=0.01, centered=True,
                                                    **clip)
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
            jit = self.config.jit and replicas == 1
            self._distributed_updates[count] = tf.function(
                lambda *args: self._distributed_step(count, *args), reduce_retracing=True, jit_compile=jit)
        loss, q = self._distributed_updates[count](*values)
        return float(loss), float(q)

    # -- checkpoints ------------------------------------------------------------------------------
    def checkpoint(self):
        return tf.train.Checkpoint(online=self.online, target=self.target, optimizer=self.optimizer,
                                   env_steps=self.env_steps, updates=self.updates, episodes=self.episodes,
                                   last_sync=self.last_sync)


def build_agent(config, strategy):
    frame_shape, _, stack, num_actions = atari.observation_spec(config.env)
    return Agent(config, frame_shape, stack, num_actions, strategy)
