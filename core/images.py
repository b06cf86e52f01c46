"""Reading image files for the models, without TensorFlow (the serving client uses it too)."""

import os

import numpy as np

from core import finite
from core.errors import UserError

# PIL's 32-bit float pixels (a float TIFF, say): the only mode that can hold NaN or infinity.
FLOAT_MODES = ("F",)


def non_finite_pixels(image, path):
    """The one-line error for a float PIL image with a NaN or infinite pixel, or None.

    Converted to 8-bit grey or RGB, a NaN pixel silently becomes black and the
    model answers with confidence, so the caller refuses the file instead."""
    if image.mode not in FLOAT_MODES:
        return None  # 8- or 16-bit integer pixels are always finite
    found = finite.first_non_finite(np.asarray(image))
    if not found:
        return None
    (row, column), value = found
    return finite.message(f"image {path}", value, f"at pixel (row {row}, column {column})")


def check_finite_pixels(image, path):
    """Raise `UserError` for a float image with a NaN or infinite pixel; return the image otherwise."""
    problem = non_finite_pixels(image, path)
    if problem:
        raise UserError(problem)
    return image


def read_image(path, shape, resize=False, what="model"):
    """A PNG/JPEG as raw float pixels (0-255) of `shape` (H, W, 1 or 3), as the image models take.

    An image of another size is an error naming both sizes unless `resize`; `what` names the
    model in that message ("model", "detector")."""
    from PIL import Image, UnidentifiedImageError

    if len(shape) != 3 or shape[-1] not in (1, 3) or min(shape) < 1:
        raise UserError(f"the {what}'s input {list(shape)} is not an image (H, W, 1 or 3)")
    if not os.path.exists(path):
        raise UserError(f"image not found: {path}")
    try:
        with Image.open(path) as image:
            image = check_finite_pixels(image, path).convert("L" if shape[-1] == 1 else "RGB")
            if image.size != (shape[1], shape[0]):
                if not resize:
                    raise UserError(f"{path} is {image.size[0]}x{image.size[1]} pixels, the {what} expects "
                                    f"{shape[1]}x{shape[0]}; pass --resize")
                image = image.resize((shape[1], shape[0]), Image.BILINEAR)
            return np.asarray(image, dtype=np.float32).reshape(shape)
    except (UnidentifiedImageError, OSError) as error:
        raise UserError(f"cannot read image {path}: {error}") from None
