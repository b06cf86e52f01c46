"""Gradient clipping that means the same on one device and on N replicas.

Keras 3 clips in `Optimizer.apply`, which a distribution strategy runs on each replica *before* the
all-reduce: under MirroredStrategy each replica clips its share of the gradient (1/N of the loss) and
the shares are summed afterwards, so `clipnorm=1` bounds the update by N instead of 1 and the run
trains differently from one device. Clipping after the sum is what the TF team calls "usually right
and what people expect" (tensorflow/tensorflow#33929); tf.keras 2 refused clipping under a strategy
for that reason. `Adam` and `RMSprop` here clip the summed gradient, so one device and N replicas take the same
steps (tests/test_optimizers.py). The mixin overrides two private methods of Keras' TensorFlow optimizer
(`_clip_gradients`, `_backend_update_step`); constraints.txt pins the Keras they were written for, and the test
fails if a new Keras moves them.
"""

import keras
import tensorflow as tf


class ClipAfterReplicaSum:
    """Mixin for a Keras optimizer: clipnorm/global_clipnorm/clipvalue apply to the gradient summed over
    the replicas. On one replica nothing changes."""

    def _clip_gradients(self, grads):
        if _replicas() > 1:
            return grads  # clipped in _backend_update_step, once the replicas' gradients are summed
        return super()._clip_gradients(grads)

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if _replicas() == 1:
            return super()._backend_update_step(grads, trainable_variables, learning_rate)
        variables = [v.value if isinstance(v, keras.Variable) else v for v in trainable_variables]
        summed = self._all_reduce_sum_gradients(list(zip(grads, variables)))
        clipped = super()._clip_gradients([g for g, _ in summed])
        tf.__internal__.distribute.interim.maybe_merge_call(
            self._distributed_tf_update_step, self._distribution_strategy,
            list(zip(clipped, [v for _, v in summed])), learning_rate)


def _replicas():
    return tf.distribute.get_strategy().num_replicas_in_sync


@keras.saving.register_keras_serializable(package="core")
class Adam(ClipAfterReplicaSum, keras.optimizers.Adam):
    """keras.optimizers.Adam whose clipping applies to the gradient summed over replicas."""


@keras.saving.register_keras_serializable(package="core")
class RMSprop(ClipAfterReplicaSum, keras.optimizers.RMSprop):
    """keras.optimizers.RMSprop whose clipping applies to the gradient summed over replicas."""
