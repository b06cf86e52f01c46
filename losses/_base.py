"""Shared pieces for the suite's losses."""

import keras
from keras import ops


def check_same_shape(name, y_true, y_pred):
    """Raise a one-line ValueError unless y_true and y_pred shapes match (static dims)."""
    a, b = tuple(y_true.shape), tuple(y_pred.shape)
    if len(a) != len(b) or any(x is not None and y is not None and x != y for x, y in zip(a, b)):
        raise ValueError(f"{name} expects y_true and y_pred of the same shape, got {a} and {b}")


class SuiteLoss(keras.losses.Loss):
    """A Loss whose constructor arguments are its config (plus Keras' own)."""

    _params = ()

    def get_config(self):
        config = super().get_config()
        config.update({k: getattr(self, k) for k in self._params})
        return config

    def _pair(self, y_true, y_pred):
        y_pred = ops.convert_to_tensor(y_pred)
        y_true = ops.cast(y_true, y_pred.dtype)
        check_same_shape(type(self).__name__, y_true, y_pred)
        return y_true, y_pred
