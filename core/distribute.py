"""Pick the `tf.distribute` strategy once, so every app runs unchanged on one
CPU, several GPUs, or several machines.

Build models, optimizers and metrics inside `strategy.scope()`, and batch
the data with `global_batch_size(per_replica, strategy)`: each replica then
sees `per_replica` examples per step, so the per-example work stays the
same when replicas are added.
"""

import json
import os

import tensorflow as tf

from core.errors import UserError

STRATEGIES = ("auto", "default", "mirrored", "multiworker")


def get_strategy(name="auto"):
    """Return the strategy named by `name`.

    auto         MirroredStrategy over all GPUs when there are several, else the
                 default (one-device) strategy
    default      the default strategy: one device, no replication
    mirrored     MirroredStrategy over all local GPUs, or over all logical CPU
                 devices when there is no GPU (useful for testing)
    multiworker  MultiWorkerMirroredStrategy, with the cluster read from TF_CONFIG
    """
    if name not in STRATEGIES:
        raise UserError(f"unknown strategy '{name}'; choose one of: {', '.join(STRATEGIES)}")
    if name == "multiworker":
        # Before anything else touches TensorFlow's devices: collective ops
        # can only be configured at program start-up.
        if "TF_CONFIG" not in os.environ:
            raise UserError("--strategy multiworker needs TF_CONFIG (the cluster and this worker's task) "
                            "in the environment")
        try:
            json.loads(os.environ["TF_CONFIG"])
        except json.JSONDecodeError as error:
            raise UserError(f"TF_CONFIG is not valid JSON: {error}") from None
        return _reduce_structures(tf.distribute.MultiWorkerMirroredStrategy())
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "default":
        return tf.distribute.get_strategy()
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)


def _reduce_structures(strategy):
    """Work around two bugs of Keras 3's `fit` under MultiWorkerMirroredStrategy.

    1. `fit` reduces a whole `(x, y)` batch with `strategy.reduce` to learn the
       input shapes; this strategy only reduces single values ("Attempt to
       convert a value (PerReplica...)"). Reduce each value of the structure.
    2. `fit` averages its scalar logs with `axis=0` ("Invalid reduction
       dimension 0 for input with 0 dimensions"). A scalar has no axis to
       average over: average across replicas only (`axis=None`).
    """
    reduce_one = strategy.reduce

    def rank(value):
        value = value.values[0] if isinstance(value, tf.distribute.DistributedValues) else value
        return getattr(getattr(value, "shape", None), "rank", None)

    def reduce(reduce_op, value, axis=None):
        return tf.nest.map_structure(
            lambda v: reduce_one(reduce_op, v, axis=axis if rank(v) else None), value)

    strategy.reduce = reduce
    return strategy


def global_batch_size(per_replica_batch_size, strategy):
    return per_replica_batch_size * strategy.num_replicas_in_sync


def is_chief(strategy=None):
    """True on the worker that should write files (the only one, outside multi-worker)."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    task = config.get("task", {})
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or not task:
        return True
    return task.get("type") == "chief" or (task.get("type") == "worker" and task.get("index") == 0
                                           and "chief" not in config.get("cluster", {}))


def num_workers(strategy=None):
    """How many worker processes train together (1 outside multi-worker training)."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return 1
    resolver = strategy.cluster_resolver
    spec = resolver.cluster_spec() if resolver is not None else None
    jobs = spec.as_dict() if spec is not None else {}
    return max(1, sum(len(jobs.get(job, ())) for job in ("chief", "worker")))


def any_worker(strategy):
    """A function flag -> whether `flag` is true on any worker: an all-reduce (in a `tf.function`:
    eagerly it costs far more than the step) that every worker must call at the same point of its
    program, so that all of them get the same answer at the same step."""

    @tf.function
    def count(flag):
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(tf.identity, args=(flag,)), axis=None)

    return lambda flag: float(count(tf.constant(1.0 if flag else 0.0))) > 0


def split_cpu(num_devices):
    """Split the one physical CPU into `num_devices` logical devices.

    Must run before TensorFlow touches a device; lets MirroredStrategy run
    for real on a machine without GPUs.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(num_devices)])
