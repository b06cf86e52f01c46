"""Minimal on-device runner: a .tflite file through LiteRT, with NumPy only.

    python -m core.tflite_run model.tflite                 # list its signature
    python -m core.tflite_run model.tflite x.npy [y.npy]    # run arrays (batched)
    python -m core.tflite_run model.tflite a.png b.png     # images, when Pillow is there
    python -m core.tflite_run model.tflite --input images=batch.npy --json

It imports `ai_edge_litert` and NumPy and nothing from TensorFlow, like a
device. Arrays are cast to the input's dtype; an input whose first dimension
is dynamic takes a batch. For a classifier exported by `core.export`, the
labels are read from `<app>/<version>/assets.extra/labels.txt` next to the
`tflite/<version>/` folder (or --labels). An input holding NaN or infinity, or
a file that is not what its name says, is a one-line error (exit status 2).
"""

import argparse
import json
import os
import sys

import numpy as np

from core import finite  # NumPy only, like this runner
from core.errors import first_line
from core.images import non_finite_pixels

SIGNATURE = "serving_default"


class RunnerError(Exception):
    pass


class TfliteModel:
    """A .tflite file's signature, callable with NumPy arrays."""

    def __init__(self, path, num_threads=None, signature=SIGNATURE):
        from ai_edge_litert.interpreter import Interpreter

        if not os.path.isfile(path):
            raise RunnerError(f"model file not found: {path}")
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        except ValueError as error:
            raise RunnerError(f"cannot load {path}: {error}") from None
        signatures = self.interpreter.get_signature_list()
        if signature not in signatures:
            raise RunnerError(f"{path} has no '{signature}' signature (it has {sorted(signatures) or 'none'})")
        self.runner = self.interpreter.get_signature_runner(signature)
        self.inputs = {
            name: (d["dtype"], [int(n) for n in d["shape_signature"]])
            for name, d in self.runner.get_input_details().items()
        }
        self.outputs = {
            name: (d["dtype"], [int(n) for n in d["shape_signature"]])
            for name, d in self.runner.get_output_details().items()
        }

    def __call__(self, **inputs):
        arrays = {}
        for name, value in inputs.items():
            if name not in self.inputs:
                raise RunnerError(f"unknown input '{name}'; the model takes {sorted(self.inputs)}")
            dtype, shape = self.inputs[name]
            try:
                array = np.asarray(value, dtype=dtype)
            except (TypeError, ValueError):
                raise RunnerError(
                    f"input '{name}' has dtype {np.asarray(value).dtype}, the model expects {np.dtype(dtype).name}"
                ) from None
            if len(array.shape) != len(shape) or any(s > 0 and s != a for s, a in zip(shape, array.shape)):
                raise RunnerError(
                    f"input '{name}' has shape {list(array.shape)}, the model expects {shape} (-1: any size)"
                )
            arrays[name] = array
        missing = set(self.inputs) - set(arrays)
        if missing:
            raise RunnerError(f"missing input(s) {sorted(missing)}")
        return {name: np.asarray(value) for name, value in self.runner(**arrays).items()}


NPY_MAGIC = b"\x93NUMPY"


def load_npy(path):
    """A .npy file's array; a text file, a pickle, object arrays or a truncated file are a one-line
    `RunnerError` (NumPy's own message for a text file speaks of pickles and trust)."""
    advice = "write it with numpy.save"
    try:
        with open(path, "rb") as f:
            if f.read(len(NPY_MAGIC)) != NPY_MAGIC:
                raise RunnerError(f"cannot read {path}: not a NumPy .npy file; {advice}")
        return np.load(path, allow_pickle=False)  # never unpickle: a .npy input is data, not code
    except OSError as error:
        raise RunnerError(f"cannot read {path}: {error.strerror or error}") from None
    except (ValueError, EOFError) as error:  # truncated, or object arrays
        raise RunnerError(f"cannot read {path}: {first_line(error)}; {advice}") from None


def refuse_non_finite(array, path):
    """NaN or infinity in an input gets a confident but meaningless answer: refuse the file instead."""
    problem = finite.non_finite_message(array, path)
    if problem:
        raise RunnerError(problem)
    return array


def read_input(path, dtype, shape):
    """An example or a batch from .npy, or an image (H, W, C raw pixels) when Pillow is installed."""
    if not os.path.isfile(path):
        raise RunnerError(f"input file not found: {path}")
    if path.endswith(".npy"):
        array = load_npy(path)
        array = array[None] if array.ndim == len(shape) - 1 else array
        return refuse_non_finite(array, path)
    try:
        from PIL import Image
    except ImportError:
        raise RunnerError(f"{path}: only .npy inputs without Pillow") from None
    if len(shape) != 4 or shape[3] not in (1, 3) or min(shape[1:3]) < 1:
        raise RunnerError(f"{path}: the model's input {shape} is not an image (N, H, W, 1 or 3); pass a .npy array")
    height, width, channels = shape[1:4]
    try:
        with Image.open(path) as image:
            problem = non_finite_pixels(image, path)
            if problem:
                raise RunnerError(problem)
            image = image.convert("L" if channels == 1 else "RGB")
            if image.size != (width, height):
                image = image.resize((width, height))
            return np.asarray(image, dtype=dtype).reshape(1, height, width, channels)
    except OSError as error:
        raise RunnerError(f"cannot read image {path}: {error}") from None


def read_labels(path):
    """Class names, one a line."""
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8").split("\n")
    except OSError as error:
        raise RunnerError(f"cannot read the labels {path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise RunnerError(f"cannot read the labels {path}: not UTF-8 text (one class name a line)") from None


def default_labels(model_path):
    """saved_models/<app>/tflite/<v>/x.tflite -> saved_models/<app>/<v>/assets.extra/labels.txt."""
    version_dir = os.path.dirname(os.path.abspath(model_path))
    app_dir = os.path.dirname(os.path.dirname(version_dir))
    path = os.path.join(app_dir, os.path.basename(version_dir), "assets.extra", "labels.txt")
    return path if os.path.isfile(path) else None


def main(argv=None):
    parser = argparse.ArgumentParser(prog="tflite-run", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help=".tflite file")
    parser.add_argument("files", nargs="*", help=".npy arrays or images for the model's single input")
    parser.add_argument(
        "--input", action="append", default=[], metavar="NAME=FILE.npy", help="an array for a named input (repeatable)"
    )
    parser.add_argument("--labels", help="class names, one a line")
    parser.add_argument("--top", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print the outputs as JSON")
    args = parser.parse_args(argv)

    model = TfliteModel(args.model, num_threads=args.threads)
    if not args.files and not args.input:
        print(
            json.dumps(
                {
                    "inputs": {k: [str(np.dtype(d)), s] for k, (d, s) in model.inputs.items()},
                    "outputs": {k: [str(np.dtype(d)), s] for k, (d, s) in model.outputs.items()},
                }
            )
        )
        return 0
    inputs = {}
    if args.files:
        if len(model.inputs) != 1:
            raise RunnerError(f"the model has inputs {sorted(model.inputs)}; pass them as --input NAME=FILE.npy")
        ((name, (dtype, shape)),) = model.inputs.items()
        inputs[name] = np.concatenate([read_input(f, dtype, shape) for f in args.files])
    for item in args.input:
        name, _, path = item.partition("=")
        if name not in model.inputs:
            raise RunnerError(f"unknown input '{name}'; the model takes {sorted(model.inputs)}")
        inputs[name] = read_input(path, *model.inputs[name])
    outputs = model(**inputs)
    if args.json:
        print(json.dumps({k: v.tolist() for k, v in outputs.items()}))
        return 0
    labels_path = args.labels or default_labels(args.model)
    labels = read_labels(labels_path) if labels_path else None
    print_outputs(outputs, args.files, labels, args.top)
    return 0


def print_outputs(outputs, names, labels, top):
    """Print each row of a (batch, classes) output as its `top` classes; other outputs as JSON."""
    for alias, value in outputs.items():
        if value.ndim == 2:
            row_names = names if names and len(names) == len(value) else [f"example {i}" for i in range(len(value))]
            for name, row in zip(row_names, value):
                best = np.argsort(row)[::-1][:top]
                print(
                    f"{name}: "
                    + ", ".join(f"{labels[i] if labels and i < len(labels) else i} {row[i]:.3f}" for i in best)
                )
        else:
            print(f"{alias}: {json.dumps(value.tolist())}")


def cli(argv=None):
    """`main`, with a `RunnerError` printed as one line and exit status 2 (`python -m core.tflite_run`)."""
    try:
        sys.exit(main(argv))
    except RunnerError as error:
        print(f"tflite-run: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli()
