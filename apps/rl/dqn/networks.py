"""Q-networks: the Nature DQN convnet for Atari frames, an MLP for vector observations, and the dueling head."""

import keras

from core import precision
from core.registry import Registry

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
        # the Q-values in float32 under a mixed policy (core.precision.output_dtype): the TD loss and argmax want
        # them exact
        return keras.layers.Dense(num_actions, name="q_values", dtype=precision.output_dtype())(x)
    value = keras.layers.Dense(1)(keras.layers.Dense(hidden, activation="relu")(x))
    advantages = keras.layers.Dense(num_actions)(keras.layers.Dense(hidden, activation="relu")(x))
    return DuelingCombine(name="q_values", dtype=precision.output_dtype())([value, advantages])


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
