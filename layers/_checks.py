"""Shared input-shape validation for the suite's layers.

Every layer raises a one-line ``ValueError`` naming itself and the shape it
expects, so a wrong wiring is obvious without reading a traceback.
"""


def _fmt(shape):
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + (",)" if len(shape) == 1 else ")")


def check_rank(layer, shape, rank, description):
    """Raise ``ValueError`` unless ``shape`` has ``rank`` dimensions."""
    shape = tuple(shape)
    if len(shape) != rank:
        raise ValueError(
            f"{type(layer).__name__} expects a {rank}-D input {description}, got shape {_fmt(shape)}"
        )


def check_last_dim(layer, shape, expected, description):
    """Raise ``ValueError`` unless the last dimension equals ``expected``."""
    shape = tuple(shape)
    if shape[-1] is not None and expected is not None and shape[-1] != expected:
        raise ValueError(
            f"{type(layer).__name__} expects {description} with last dimension {expected}, "
            f"got shape {_fmt(shape)}"
        )


def check_known(layer, shape, axes, description):
    """Raise ``ValueError`` if any of ``axes`` is unknown (None)."""
    shape = tuple(shape)
    if any(shape[a] is None for a in axes):
        raise ValueError(
            f"{type(layer).__name__} expects {description} with known static size on axes {list(axes)}, "
            f"got shape {_fmt(shape)}"
        )
