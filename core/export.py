"""Export for deployment: a SavedModel for TensorFlow Serving, TFLite files
for devices, and a parity check between the two.

Layout written by `export_model` (TF Serving reads `saved_models/<app>/`
and serves the integer version folders in it; it ignores the rest):

  saved_models/<app>/<version>/                 SavedModel, `serving_default` signature
  saved_models/<app>/<version>/assets.extra/    labels.txt (class names) when given;
                                                input_spec.json and sample_inputs.npz (a few of the
                                                inputs the parity check used), so any tool downstream
                                                feeds the export inputs of the right shape, dtype and range
  saved_models/<app>/tflite/<version>/float.tflite
  saved_models/<app>/tflite/<version>/dynamic.tflite   dynamic-range quantized weights
  saved_models/<app>/tflite/<version>/int8.tflite      full integer, when the model allows

Keras 3 models go to TFLite through the SavedModel (`from_saved_model`):
`TFLiteConverter.from_keras_model` fails for many Keras 3 models.

A signature of strings or with a decoding loop is an `endpoint_archive`; when it cannot
become TFLite, the .tflite files come from a `TFLiteSource` (say, a language model's one
step), whose SavedModel is `<version>/tflite_source/` (with its own assets.extra/).

A version folder appears whole or not at all: it is written as `.tmp-<version>`
and renamed. A write that fails (full disk, read-only folder) removes what it
wrote and is a one-line `UserError`; the versions before it are untouched.
"""

import dataclasses
import os
import re
import shutil

import keras
import numpy as np
import tensorflow as tf

from core.checkpoints import quiet_write_failures, write_error_reason, write_errors
from core.errors import UserError

SIGNATURE = "serving_default"
INPUT_SPEC = os.path.join("assets.extra", "input_spec.json")
SAMPLE_INPUTS = os.path.join("assets.extra", "sample_inputs.npz")
SAMPLE_ROWS = 8  # examples kept in sample_inputs.npz: enough for a parity check, small next to the weights

# How far a TFLite file may drift from the SavedModel on the same batch, in
# the largest absolute difference of any output (classifier probabilities
# live in [0, 1], so these are absolute probability errors).
TOLERANCES = {"float": 1e-4, "dynamic": 0.1, "int8": 0.15}


class ParityError(Exception):
    """A converted model disagrees with the SavedModel beyond its tolerance."""


def float32_model(model):
    """`model` itself when every layer computes in float32, else the same network with the same weights rebuilt
    in float32. A run trained with --precision mixed_bfloat16/mixed_float16 (core/precision.py) keeps those dtype
    policies in its model.keras, and TFLite has no bfloat16 kernels: the export computes in float32 what the
    trained float32 weights give, so the SavedModel, the TFLite files and their parity check all agree."""
    if all(layer.compute_dtype == "float32" for layer in model._flatten_layers()):
        return model

    def in_float32(value):
        if isinstance(value, dict) and value.get("class_name") == "DTypePolicy":
            return {**value, "config": {**value["config"], "name": "float32"}}
        if isinstance(value, dict):
            return {key: in_float32(item) for key, item in value.items()}
        return [in_float32(item) for item in value] if isinstance(value, list) else value

    copy = keras.saving.deserialize_keras_object(in_float32(keras.saving.serialize_keras_object(model)))
    copy.set_weights(model.get_weights())
    return copy


def export_saved_model(model, export_dir, input_names=None, output_names=None):
    """Write `model` as a SavedModel whose `serving_default` signature has
    meaningful tensor names (`input_names`, `output_names`), for TF Serving;
    in float32 whatever its layers' dtype policies (`float32_model`)."""
    model = float32_model(model)
    input_names = list(input_names or [t.name for t in model.inputs])
    output_names = list(output_names or [t.name for t in model.outputs])
    if len(input_names) != len(model.inputs) or len(output_names) != len(model.outputs):
        raise ValueError(f"model has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                         f"got names {input_names} and {output_names}")
    specs = [tf.TensorSpec((None,) + tuple(t.shape[1:]), t.dtype, name=name)
             for t, name in zip(model.inputs, input_names)]

    def serve(*inputs):
        outputs = model(inputs[0] if len(inputs) == 1 else list(inputs), training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return dict(zip(output_names, outputs))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name=SIGNATURE, fn=serve, input_signature=specs)
    archive.write_out(export_dir, verbose=False)
    return export_dir


def endpoint_archive(fn, input_signature, track=()):
    """An `ExportArchive` whose `serving_default` is `fn(*inputs) -> dict of outputs` (strings, vectorization, a
    decoding loop: what a model's call cannot express); `track`: the layers and models `fn` uses."""
    archive = keras.export.ExportArchive()
    for item in track:
        archive.track(item)
    archive.add_endpoint(name=SIGNATURE, fn=fn, input_signature=input_signature)
    return archive


@dataclasses.dataclass
class TFLiteSource:
    """What the TFLite files compute when the served signature cannot be converted: a Keras model or an
    `endpoint_archive` of numbers in and out. `export_model` writes its SavedModel in the version folder's
    `tflite_source/` (TF Serving ignores it), converts it, and checks the files against it on `sample_inputs`."""

    model: object
    input_names: list
    output_names: list
    sample_inputs: dict
    FOLDER = "tflite_source"


def convert_to_tflite(saved_model_dir, tflite_path, quantization="float", representative_data=None):
    """Convert the SavedModel's `serving_default` signature to a .tflite file.

    quantization: "float" (no quantization), "dynamic" (int8 weights, float
    activations) or "int8" (weights and activations, calibrated on
    `representative_data`, an iterable of input batches -- arrays, or dicts
    name -> array for several inputs, in the model's own dtypes (integer ids
    stay integers); float inputs and outputs stay float so callers need not
    know the quantization parameters).
    """
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=[SIGNATURE])
    if quantization not in TOLERANCES:
        raise ValueError(f"unknown quantization '{quantization}'; choose one of {sorted(TOLERANCES)}")
    if quantization in ("dynamic", "int8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "int8":
        if representative_data is None:
            raise ValueError("int8 quantization needs representative_data")
        converter.representative_dataset = lambda: (
            _as_arrays(batch) if isinstance(batch, dict) else [_as_array(batch)] for batch in representative_data)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    flatbuffer = converter.convert()
    _atomic_write(tflite_path, flatbuffer)
    return tflite_path


def _atomic_write(path, data):
    tmp = f"{path}.tmp"
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as error:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise UserError(f"cannot write {path}: {write_error_reason(error)}") from None


def tflite_signature_runner(tflite_path, num_threads=None, inputs=None, what="a model for this"):
    """The LiteRT runner for the file's `serving_default` signature. A file that is not a .tflite
    model (empty, truncated, another kind) is a one-line `UserError`, and so is one whose inputs
    lack the names `inputs` (a model of another app: "not `what`")."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_path=str(tflite_path), num_threads=num_threads)
    except ValueError as error:  # "The model is not a valid Flatbuffer buffer", "mmap of size 0 requested"
        raise UserError(f"cannot load {tflite_path}: {str(error).splitlines()[0][:200]} "
                        f"(not a .tflite model file, or a truncated one)") from None
    if SIGNATURE not in interpreter.get_signature_list():
        raise UserError(f"{tflite_path} has no '{SIGNATURE}' signature; convert it from a SavedModel with signatures")
    runner = interpreter.get_signature_runner(SIGNATURE)
    names = sorted(runner.get_input_details())
    if inputs is not None and not set(inputs) <= set(names):
        raise UserError(f"{tflite_path} is not {what}: it takes {', '.join(names)}, not {', '.join(sorted(inputs))}")
    return runner


def run_tflite(tflite_path, inputs):
    """Run `inputs` (a dict name -> array) through a .tflite file; dict of outputs."""
    runner = tflite_signature_runner(tflite_path)
    return {name: np.asarray(value) for name, value in runner(**_as_arrays(inputs)).items()}


def load_signature(folder, inputs=None, outputs=None, what="an export for this"):
    """(the loaded SavedModel, its `serving_default` signature); keep the first alive while the
    second is used. A folder that is not a SavedModel, a damaged one, or one whose signature
    does not take `inputs` and give `outputs` (names) is a one-line `UserError`."""
    if not os.path.isdir(folder):
        raise UserError(f"SavedModel folder not found: {folder}")
    if not os.path.isfile(os.path.join(folder, "saved_model.pb")):
        raise UserError(f"not a SavedModel folder (no saved_model.pb): {folder}")
    try:
        loaded = tf.saved_model.load(folder)
    except Exception as error:  # a damaged saved_model.pb or variables/: OSError, ValueError, OpError, ...
        raise UserError(f"cannot load the SavedModel in {folder}: {str(error).splitlines()[0][:200]}") from None
    if SIGNATURE not in loaded.signatures:
        raise UserError(f"{folder} has no '{SIGNATURE}' signature (it has {sorted(loaded.signatures) or 'none'})")
    signature = loaded.signatures[SIGNATURE]
    got_in, got_out = sorted(signature.structured_input_signature[1]), sorted(signature.structured_outputs)
    if not set(inputs or ()) <= set(got_in) or not set(outputs or ()) <= set(got_out):
        raise UserError(f"{folder} is not {what}: its signature takes {', '.join(got_in)} -> {', '.join(got_out)}, "
                        f"expected {', '.join(inputs or got_in)} -> {', '.join(outputs or got_out)}")
    return loaded, signature


def read_labels(folder):
    """The class names in a SavedModel folder's assets.extra/labels.txt (written by `export_model`),
    or None when it has none."""
    path = os.path.join(folder, "assets.extra", "labels.txt")
    if not os.path.isfile(path):
        return None
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8").split("\n")[:-1]
    except UnicodeDecodeError:
        raise UserError(f"corrupt {path}: not UTF-8 text (one class name a line)") from None


def run_saved_model(saved_model_dir, inputs, outputs=None, what="an export for this"):
    """Run `inputs` (a dict name -> array) through the SavedModel's signature (see `load_signature`)."""
    loaded, signature = load_signature(saved_model_dir, inputs=list(inputs), outputs=outputs, what=what)
    result = signature(**{k: tf.constant(v) for k, v in _as_arrays(inputs).items()})
    return {name: value.numpy() for name, value in result.items()}


def _as_array(value):
    """float64 (numpy's default) becomes the models' float32; integer ids and strings keep their dtype."""
    value = np.asarray(value)
    return value.astype(np.float32) if value.dtype == np.float64 else value


def _as_arrays(inputs):
    return {name: _as_array(value) for name, value in inputs.items()}


def max_abs_difference(reference, candidate):
    """The largest absolute difference over every output: 0 where two values are equal (equal infinities
    too), inf where a value is infinite in one and finite in the other. An output of another shape, or NaN in
    either, is a ValueError: no figure can say how far apart those are."""
    largest = 0.0
    for name in reference:
        a, b = np.asarray(reference[name]), np.asarray(candidate[name])
        if a.shape != b.shape:
            raise ValueError(f"output '{name}' has shape {b.shape}, the SavedModel's {a.shape}")
        if a.dtype.kind not in "biuf":
            if not np.array_equal(a, b):
                raise ValueError(f"output '{name}' ({a.dtype}) differs")
            continue
        a, b = a.astype(np.float64), b.astype(np.float64)
        if np.isnan(a).any() or np.isnan(b).any():
            raise ValueError(f"output '{name}' has NaN values")
        with np.errstate(invalid="ignore"):  # inf - inf where both are the same infinity: masked out below
            difference = np.where(a == b, 0.0, np.abs(a - b))
        largest = max(largest, float(difference.max(initial=0.0)))
    return largest


def export_folder(app, model, root="saved_models"):
    """The one naming rule of every export: saved_models/<app>_<model>/ (TF Serving's model name is the folder
    name; its version folders go inside)."""
    return os.path.join(root, f"{app}_{model}")


def next_version(app_dir):
    """One more than the highest integer version folder in `app_dir` (1 if none)."""
    if not os.path.isdir(app_dir):
        return 1
    versions = [int(name) for name in os.listdir(app_dir) if re.fullmatch(r"\d+", name)]
    return max(versions, default=0) + 1


def latest_version_dir(app_dir):
    version = next_version(app_dir) - 1
    if version < 1:
        raise UserError(f"no exported versions in {app_dir}; run the app's 'export' command first")
    return os.path.join(app_dir, str(version))


def absolute_parity(kind, reference, candidate):
    """The default parity rule: every output within TOLERANCES[kind] of the
    SavedModel's, by its largest absolute difference."""
    difference = max_abs_difference(reference, candidate)
    problem = None if difference <= TOLERANCES[kind] else f"by {difference:.3g} (tolerance {TOLERANCES[kind]})"
    return {"max_abs_diff": difference}, problem


def input_record(sample_inputs, rows=SAMPLE_ROWS):
    """The assets.extra files that describe an export's inputs: {INPUT_SPEC: JSON text (per input: dtype,
    shape with the batch as null, min and max of the samples), SAMPLE_INPUTS: .npz bytes (the first `rows`)}.
    Text inputs are stored as fixed-width unicode or bytes arrays (an object array would need pickle)."""
    import io
    import json

    arrays = {name: _as_array(value)[:rows] for name, value in sample_inputs.items()}
    arrays = {name: np.asarray(a.tolist()) if a.dtype == object else a for name, a in arrays.items()}
    spec = {name: {"dtype": str(a.dtype), "shape": [None, *a.shape[1:]],
                   "min": a.min().item() if a.dtype.kind in "biuf" and a.size else None,
                   "max": a.max().item() if a.dtype.kind in "biuf" and a.size else None}
            for name, a in arrays.items()}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return {INPUT_SPEC: json.dumps(spec, indent=2) + "\n", SAMPLE_INPUTS: buffer.getvalue()}


def read_sample_inputs(folder):
    """The sample inputs an export recorded (dict name -> array), or None for an export without them."""
    path = os.path.join(folder, SAMPLE_INPUTS)
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as samples:
            return {name: samples[name] for name in samples.files}
    except (OSError, ValueError) as error:
        raise UserError(f"corrupt {path}: {str(error).splitlines()[0][:200]}") from None


def _write_saved_model(model, export_dir, input_names, output_names):
    if hasattr(model, "write_out"):  # an ExportArchive (keras.export.ExportArchive() makes a backend's subclass)
        model.write_out(export_dir, verbose=False)
    else:
        export_saved_model(model, export_dir, input_names, output_names)


def _write_version(model, saved_model_dir, input_names, output_names, files, tflite_from=None):
    """The SavedModel (and the `tflite_from` one in its folder) and `files` (relative path -> text) in
    `saved_model_dir`, whole or not at all: TF Serving watches the folder and loads any integer version
    folder that appears."""
    tmp_dir = os.path.join(os.path.dirname(saved_model_dir), f".tmp-{os.path.basename(saved_model_dir)}")
    try:
        shutil.rmtree(tmp_dir, ignore_errors=True)  # left by a killed export
        with quiet_write_failures():
            _write_saved_model(model, tmp_dir, input_names, output_names)
            if tflite_from is not None:
                _write_saved_model(tflite_from.model, os.path.join(tmp_dir, TFLiteSource.FOLDER),
                                   tflite_from.input_names, tflite_from.output_names)
        for relative_path, text in files.items():
            path = os.path.join(tmp_dir, relative_path)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb" if isinstance(text, bytes) else "w") as f:
                f.write(text)
        os.replace(tmp_dir, saved_model_dir)
    except write_errors() as error:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise UserError(f"cannot write the export {saved_model_dir}: {write_error_reason(error)}; "
                        f"the versions before it are untouched") from None
    except BaseException:  # a model that cannot be exported, Ctrl-C: no half version left behind either
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise


def export_model(model, app_dir, *, input_names, output_names, sample_inputs, representative_data=None,
                 class_names=None, version=None, kinds=("float", "dynamic"), check=absolute_parity,
                 extra_files=None, log=print, tflite_from=None):
    """Export `model` for Serving and TFLite, and check that they agree.

    `model`: a Keras model (its call is the signature, inputs and outputs
    named by `input_names`, `output_names`) or an `endpoint_archive` (its
    `serving_default` takes `input_names` and gives `output_names`).
    Writes `app_dir/<version>/` (SavedModel; `assets.extra/labels.txt` from
    `class_names`; `extra_files`, a dict relative path -> text) atomically, then
    `app_dir/tflite/<version>/<kind>.tflite` for each of `kinds` (+ "int8" when
    `representative_data` is given; skipped with a note when the model has ops
    TFLite cannot quantize). `sample_inputs` (dict name -> batch) runs through
    the SavedModel and each TFLite file; `check(kind, reference, candidate)`
    returns (figures dict, problem or None) and a problem raises `ParityError`.
    The default check bounds every output's largest absolute difference;
    outputs such as masks, argmax actions or post-NMS detections need their own.
    Returns a dict with the paths written, each file's figures (`parity[kind]`,
    and `max_abs_diff[kind]` where the check measured it), and the SavedModel's
    outputs on `sample_inputs` (`saved_model_outputs`, for a caller's own
    comparison with Keras without running the SavedModel again).
    `tflite_from`: a `TFLiteSource` when the served signature cannot become
    TFLite. The TFLite files are then converted from its SavedModel
    (`report["tflite_source"]`) and checked against it on its own sample
    inputs (`report["tflite_source_outputs"]`); `representative_data` and
    `check` are about it.
    """
    version = int(version or next_version(app_dir))
    saved_model_dir = os.path.join(app_dir, str(version))
    if os.path.exists(saved_model_dir):
        raise UserError(f"{saved_model_dir} already exists; choose another --version")
    files = dict(extra_files or {})
    files.update(input_record(sample_inputs))
    if class_names:
        files[os.path.join("assets.extra", "labels.txt")] = "\n".join(class_names) + "\n"
    source_dir, source_inputs = saved_model_dir, sample_inputs
    if tflite_from is not None:
        source_dir, source_inputs = os.path.join(saved_model_dir, TFLiteSource.FOLDER), tflite_from.sample_inputs
        files.update({os.path.join(TFLiteSource.FOLDER, path): text
                      for path, text in input_record(source_inputs).items()})
    _write_version(model, saved_model_dir, input_names, output_names, files, tflite_from)

    reference = run_saved_model(saved_model_dir, sample_inputs, outputs=output_names)
    tflite_dir = os.path.join(app_dir, "tflite", str(version))
    report = {"version": version, "saved_model": saved_model_dir, "tflite": {}, "parity": {}, "max_abs_diff": {},
              "saved_model_outputs": reference}
    if tflite_from is not None:
        reference = run_saved_model(source_dir, source_inputs, outputs=tflite_from.output_names)
        report.update(tflite_source=source_dir, tflite_source_outputs=reference)
    for kind in list(kinds) + (["int8"] if representative_data is not None else []):
        path = os.path.join(tflite_dir, f"{kind}.tflite")
        try:
            convert_to_tflite(source_dir, path, kind, representative_data)
        except UserError:  # the file could not be written
            raise
        except Exception as error:  # the converter raises ConverterError and friends
            if kind != "int8":
                raise
            log(f"note: full-int8 conversion skipped: {str(error).splitlines()[0][:200]}")
            continue
        figures, problem = check(kind, reference, run_tflite(path, source_inputs))
        report["tflite"][kind] = path
        report["parity"][kind] = figures
        if "max_abs_diff" in figures:
            report["max_abs_diff"][kind] = figures["max_abs_diff"]
        if problem:
            raise ParityError(f"{path} differs from the SavedModel {problem}")
    return report
