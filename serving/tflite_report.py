"""The TFLite table for every exported app (`make tflite`).

For each app under saved_models/ (latest version): the float, dynamic-range
and full-int8 .tflite files of `core.export` (converted here when missing;
int8 needs a representative dataset, taken from the app's dataset when it is
known), and for each file:
  size, max |difference| vs the SavedModel on the same inputs,
  test accuracy (classifiers whose labels.txt matches a known dataset),
  mean and p95 latency of one example with LiteRT (XNNPACK, 1 thread)
  next to the SavedModel's on this CPU.
Apps without a known dataset are compared on the sample inputs the export
recorded (`assets.extra/sample_inputs.npz`, see core.export), which have the
shape, dtype and range the model expects (no accuracy column); only an export
written before those files existed falls back to seeded random inputs.
The max |difference| is reported, not enforced (each app's export enforces its
own parity rule); a comparison that cannot be made (NaN, another shape) or an
infinite difference is an error: the table is printed and the command exits 2.
"""

import json
import os
import time

import numpy as np

from core import export
from serving import config as config_lib
from serving.manager import Servable

KINDS = ("float", "dynamic", "int8")


def dataset_for(labels):
    """The offline dataset whose class names are the export's labels, if any."""
    from core import data

    for name, (_, class_names) in data.OFFLINE_DATASETS.items():
        if labels and list(class_names) == list(labels):
            return name
    return None


def _dataset_fits(signature, dataset):
    """Whether the export takes one input of the dataset's image shape (a detector of 96x96 scenes has the
    classifier's class names but not its inputs)."""
    from core import data

    if not dataset or len(signature.inputs) != 1:
        return False
    shape = data.load_dataset(dataset, limit=1).test.element_spec[0].shape
    return list(next(iter(signature.inputs.values())).shape[1:]) == list(shape)


def _inputs(signature, dataset, limit, samples=None, seed=0):
    """(inputs dict, labels or None, representative batches or None)."""
    if _dataset_fits(signature, dataset):
        from core import data

        images = data.load_dataset(dataset, limit=limit)
        x, y = zip(*images.test.take(limit).as_numpy_iterator())
        representative = [b for b, _ in images.train.batch(32).take(8).as_numpy_iterator()]
        return {next(iter(signature.inputs)): np.stack(x)}, np.asarray(y), representative
    if samples is not None:
        single = next(iter(samples.values())) if len(samples) == 1 else None
        return samples, None, None if single is None else [single[i:i + 1] for i in range(len(single))]
    rng = np.random.default_rng(seed)
    inputs = {}
    for alias, spec in signature.inputs.items():
        shape = [min(limit, 64) if d is None else d for d in spec.shape]
        inputs[alias] = (rng.uniform(0, 255, shape) if spec.dtype.kind == "f" else rng.integers(0, 10, shape)).astype(
            spec.dtype
        )
    batches = [{k: v[i : i + 8] for k, v in inputs.items()} for i in range(0, len(next(iter(inputs.values()))), 8)]
    return inputs, None, [b[next(iter(b))] for b in batches] if len(inputs) == 1 else None


def _batches(inputs, size):
    n = len(next(iter(inputs.values())))
    for start in range(0, n, size):
        yield {k: v[start : start + size] for k, v in inputs.items()}


def _latency(fn, example, runs):
    for _ in range(min(10, runs)):
        fn(example)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn(example)
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.mean(times)), float(np.percentile(times, 95))


def app_report(app_dir, *, name=None, limit=2000, latency_runs=200, dataset=None, log=print):
    import tensorflow as tf

    version = config_lib.list_versions(app_dir)[-1]
    servable = Servable(name or os.path.basename(app_dir), version, os.path.join(app_dir, str(version)))
    signature = servable.signature(export.SIGNATURE)
    dataset = dataset or dataset_for(servable.labels)
    samples = export.read_sample_inputs(servable.path)
    inputs, labels, representative = _inputs(signature, dataset, limit, samples)
    dataset = dataset if labels is not None else None
    source = (
        f"test examples of {dataset}"
        if dataset
        else "inputs recorded by the export"
        if samples is not None
        else "seeded random inputs (an export without sample_inputs.npz)"
    )
    reference = {}
    for batch in _batches(inputs, 256):
        for k, v in servable.run(signature, batch).items():
            reference.setdefault(k, []).append(v)
    reference = {k: np.concatenate(v) for k, v in reference.items()}
    classifier = labels is not None and len(reference) == 1 and next(iter(reference.values())).ndim == 2

    rows = []
    example = {k: v[:1] for k, v in inputs.items()}
    fn = lambda e: signature.function(**{k: tf.constant(v) for k, v in e.items()})
    mean, p95 = _latency(fn, example, latency_runs)
    rows.append(
        {
            "app": servable.name,
            "version": version,
            "kind": "SavedModel",
            "size_kib": _dir_size(servable.path) / 1024,
            "max_abs_diff": 0.0,
            "accuracy": _accuracy(reference, labels) if classifier else None,
            "latency_ms_mean": mean,
            "latency_ms_p95": p95,
        }
    )
    tflite_dir = os.path.join(app_dir, "tflite", str(version))
    for kind in KINDS:
        path = os.path.join(tflite_dir, f"{kind}.tflite")
        if not os.path.isfile(path):
            if kind == "int8" and representative is None:
                log(f"note: {servable.name}: no representative data for int8")
                continue
            log(f"converting {servable.name} v{version} to {kind} TFLite")
            try:
                export.convert_to_tflite(servable.path, path, kind, representative)
            except Exception as error:  # the converter's errors have many types
                log(f"note: {servable.name}: {kind} conversion failed: {str(error).splitlines()[0][:200]}")
                continue
        runner = export.tflite_signature_runner(path, num_threads=1)
        outputs = {}
        for batch in _batches(inputs, 256):
            for k, v in runner(**batch).items():
                outputs.setdefault(k, []).append(np.asarray(v))
        outputs = {k: np.concatenate(v) for k, v in outputs.items()}
        single = export.tflite_signature_runner(path, num_threads=1)
        mean, p95 = _latency(lambda e: single(**e), example, latency_runs)
        try:
            difference = export.max_abs_difference(reference, outputs)
            problem = None if np.isfinite(difference) else "an output is infinite in one file and finite in the other"
        except ValueError as error:
            difference, problem = float("nan"), str(error)
        rows.append(
            {
                "app": servable.name,
                "version": version,
                "kind": kind,
                "size_kib": os.path.getsize(path) / 1024,
                "max_abs_diff": difference,
                "problem": problem,
                "accuracy": _accuracy(outputs, labels) if classifier else None,
                "latency_ms_mean": mean,
                "latency_ms_p95": p95,
            }
        )
    return {
        "app": servable.name,
        "version": version,
        "dataset": dataset,
        "inputs": source,
        "examples": len(reference[next(iter(reference))]),
        "rows": rows,
    }


def _accuracy(outputs, labels):
    return float(np.mean(next(iter(outputs.values())).argmax(axis=1) == labels))


def _dir_size(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def format_table(reports):
    lines = [
        "| app | v | model | size KiB | max abs diff (reported) | accuracy | mean ms | p95 ms |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for report in reports:
        for r in report["rows"]:
            accuracy = "-" if r["accuracy"] is None else f"{r['accuracy']:.4f}"
            lines.append(
                f"| {r['app']} | {r['version']} | {r['kind']} | {r['size_kib']:.0f} | "
                f"{r['max_abs_diff']:.2g} | {accuracy} | {r['latency_ms_mean']:.3f} | {r['latency_ms_p95']:.3f} |"
            )
    return "\n".join(lines)


def main(root="saved_models", *, apps=None, limit=2000, latency_runs=200, datasets=None, log=print):
    from core.errors import UserError

    folders = config_lib.model_paths(root)
    apps = apps or list(folders)
    if not apps:
        raise UserError(f"no exported app under {root}/; run an app's export first (e.g. make classify)")
    reports = []
    for app in apps:
        app_dir = os.path.join(root, folders.get(app, app))
        if not config_lib.list_versions(app_dir):
            raise UserError(f"no exported versions in {app_dir}")
        report = app_report(
            app_dir, name=app, limit=limit, latency_runs=latency_runs, dataset=(datasets or {}).get(app), log=log
        )
        reports.append(report)
        path = os.path.join(app_dir, "tflite", str(report["version"]), "report.json")
        with open(path, "w") as f:
            json.dump(report, f, indent=2)
        data_note = f"{report['examples']} {report['inputs']}"
        log(
            f"{app} v{report['version']}: {data_note}; latency of one example, LiteRT (XNNPACK, 1 thread) "
            f"vs SavedModel (TF, all cores); wrote {path}"
        )
    log(format_table(reports))
    problems = [
        f"{r['app']} {r['kind']}: {r['problem']}" for report in reports for r in report["rows"] if r.get("problem")
    ]
    if problems:
        raise UserError("TFLite differs from the SavedModel in a way no figure measures: " + "; ".join(problems))
    return reports
