"""Numeric precision and XLA for training: the two levers that pay most on a GPU, settable and testable on a CPU.

Every app's training config inherits `ComputeOptions` (flags `--precision` and `--jit`):

    float32          everything in float32 (the default)
    mixed_bfloat16   layers compute in bfloat16, variables stay float32 (Keras' mixed-precision policy); fast
                     on GPUs with bfloat16 units (A100, H100/H200) and CPUs with AVX-512 BF16 / AMX, slower
                     elsewhere; needs no loss scaling (bfloat16 has float32's exponent range)
    mixed_float16    layers compute in float16, variables stay float32; Keras' `compile` wraps the optimizer in
                     a `LossScaleOptimizer`, whose dynamic loss scale keeps small gradients from flushing to 0
    --jit            `compile(jit_compile=True)`: XLA fuses the training step's ops; --no-jit: never; neither:
                     Keras' own choice ("auto": XLA on a GPU, not on a CPU)

The model's outputs stay float32 (the apps give their output layers `dtype=output_dtype()`; `float32_outputs`
wraps a model built otherwise), so losses, metrics and the exported signatures are float32 whatever the
policy: a softmax in float16 loses the small probabilities a cross-entropy needs.
`make bench` measures what each lever does on the machine it runs on.
"""

import contextlib
from dataclasses import dataclass

from core.cli import option

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


@dataclass
class ComputeOptions:
    """The compute settings of a training run (a base class of each app's training config)."""

    precision: str = option("float32", "Keras dtype policy of the layers (variables stay float32)",
                            choices=PRECISIONS)
    jit: bool | None = option(None, "compile the training step with XLA (Keras' jit_compile); none: Keras' choice, "
                                    "XLA on a GPU and not on a CPU")


def xla(jit):
    """`compile`'s jit_compile for the `jit` setting: True, False, or Keras' "auto" when it is None."""
    return "auto" if jit is None else jit


@contextlib.contextmanager
def policy(name):
    """Models built inside use the dtype policy `name` (PRECISIONS); the previous policy comes back after, so
    a later model in the same process (a test, an evaluation) is not built in reduced precision by accident.
    "float32" leaves the policy as it is: Keras' default follows `keras.config.floatx()`, which a float64
    computation (the suite's exact distribution tests) sets."""
    import keras

    if name not in PRECISIONS:
        from core.errors import UserError

        raise UserError(f"unknown precision '{name}'; choose one of: {', '.join(PRECISIONS)}")
    if name == "float32":
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def output_dtype():
    """The dtype for a model's output layer, called while the model is built: "float32" under a mixed policy (the
    rest computes in bfloat16/float16; the probabilities, losses and exports stay float32 — a reduced-precision
    softmax rounds the small probabilities a cross-entropy's log needs), else None: the global policy, which
    follows `keras.config.floatx()` (float64 in the suite's exact distribution tests)."""
    import keras

    policy = keras.config.dtype_policy()
    return "float32" if policy.compute_dtype != policy.variable_dtype else None


def float32_outputs(model):
    """`model` itself when its outputs are float32, else a functional model with the same layers and weights
    whose outputs are cast to float32."""
    import keras

    if all(getattr(output, "dtype", "float32") == "float32" for output in model.outputs):
        return model
    outputs = keras.tree.map_structure(lambda t: keras.ops.cast(t, "float32"), model.outputs)
    if len(model.outputs) == 1:
        outputs = outputs[0]
    return keras.Model(model.inputs, outputs, name=model.name)
