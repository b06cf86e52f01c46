"""The suite's benchmarks: compute ceiling, training FLOP/s, classifier throughput, inference, DQN, memory.

    python bench/run.py                       # everything (~10-15 min on 2 cores); `make bench`
    python bench/run.py --sections ceiling,inference --apps classify,rl
    python bench/run.py --case train:classify  # one case, JSON on stdout (what the driver runs)

Every case runs in its own Python process, so its peak RSS (`resource.getrusage`)
is that case's alone and one case's TensorFlow state cannot slow the next. The
driver prints one table row per case as it finishes, writes one CSV per
section under --out (bench/results/bench/, committed), and rewrites the tables between the markers
in docs/bench.md. Speeds are measured on random inputs of the right shape
(speed does not depend on the values) from models trained a few steps only.

Sections:
  ceiling     float32 matmul GFLOP/s in TensorFlow: the machine's compute ceiling.
  train       each app's training step: FLOPs from the graph's cost analysis
              (`tf.compat.v1.profiler` float_ops of the step's tf.function graph,
              forward + backward + optimizer), measured step time, achieved
              GFLOP/s and its fraction of the ceiling; peak RSS of training.
  throughput  the default classifier (on Fashion-MNIST): plain `fit` on an
              untuned tf.data pipeline vs `jit_compile=True` (XLA) vs a tuned
              pipeline (cache, parallel map, prefetch: `core.data.batched`), and
              the keras-io "Simple MNIST convnet" example side by side.
  inference   per app: Keras `predict`, SavedModel, TFLite float, TFLite int8;
              latency per example at batch 1 and 64, model sizes; peak RSS of serving.
  dqn         environment steps/s and learner updates/s of `apps.rl train --task dqn`
              (Pong preset, a short sitting), and CleanRL's `dqn_atari.py` beside it, in the
              side environment .venv-cleanrl/ (`make bench-reference`, bench/reference/).
  precision   the default classifier's training step at its budget's batch size in float32,
              float32 + XLA, mixed_bfloat16 and mixed_bfloat16 + XLA (`--precision`, `--jit`;
              core/precision.py): examples/s as ratios to float32, and the CPU (bfloat16 pays on
              CPUs with AVX-512 BF16 / AMX, or GPUs, and costs elsewhere).
"""

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

APPS = ("classify", "generative", "sequence", "rl", "style")
# Where each app's model classes are registered, so `keras.models.load_model` finds them.
MODEL_MODULES = {"classify": "apps.classify.models", "generative": "apps.generative.vae",
                 "sequence": "apps.sequence.models", "rl": "apps.rl.dqn", "style": "apps.style.app"}
SECTIONS = ("ceiling", "train", "throughput", "inference", "dqn", "precision")
VARIANTS = ("plain", "xla", "tuned", "keras_io")
PRECISION_VARIANTS = ("float32", "float32_jit", "mixed_bfloat16", "mixed_bfloat16_jit")
DOCS_BEGIN, DOCS_END = "<!-- bench:begin -->", "<!-- bench:end -->"


def _default_classifier_name():
    from apps.classify.budgets import BUDGETS, DEFAULT_MODEL

    width = BUDGETS[DEFAULT_MODEL].get("width")
    return DEFAULT_MODEL + (f" width {width}" if width else "")


def _default_classifier(build_model, input_shape, num_classes):
    """The classify app's default model at its default width (apps/classify/budgets.py)."""
    from apps.classify.budgets import BUDGETS, DEFAULT_MODEL

    return build_model(DEFAULT_MODEL, input_shape, num_classes, width=BUDGETS[DEFAULT_MODEL].get("width"))


def peak_rss_mb():
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------------------------------------------
# Each app's representative model and training step (built from the app's own code, not copies).
# A spec: model (the Keras model people export), step (a tf.function training step), batch(n) (the step's
# inputs), inputs(n) (dict name -> array for inference), output name, and representative batches for int8.


def _uniform(shape, high=255.0, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).uniform(0, high, shape).astype(dtype)


def _keras_step(model):
    """The compiled model's own `train_step` (what `fit` runs) as a tf.function."""
    import tensorflow as tf

    return tf.function(model.train_step)


def spec_classify(batch_size=64):
    import keras

    from apps.classify.app import compile_model
    from apps.classify.models import build_model

    model = compile_model(_default_classifier(build_model, (28, 28, 1), 10))

    def batch(n):
        return (_uniform((n, 28, 28, 1)), keras.utils.to_categorical(np.arange(n) % 10, 10))

    return dict(
        name=f"{_default_classifier_name()} (default classifier), 28x28x1",
        model=model,
        step=_keras_step(model),
        batch=batch,
        batch_size=batch_size,
        inputs=lambda n: {"images": _uniform((n, 28, 28, 1))},
        output="probabilities",
    )


def spec_generative(batch_size=64):
    from apps.generative.config import TrainConfig, with_model_defaults
    from apps.generative.models import MODELS
    from core.cli import config_dict

    config = with_model_defaults(TrainConfig(model="vae"))
    net = MODELS.get("vae")((28, 28, 1), 10, config_dict(config))
    net.compile_for_run(config.learning_rate)
    latent_dim = config.latent_dim
    generator, _ = net.sampler()

    def batch(n):
        return (_uniform((n, 28, 28, 1), high=1.0), np.zeros(n, np.int32))

    return dict(
        name="VAE (train: encoder+decoder; served: decoder)",
        model=generator,
        step=_keras_step(net),
        batch=batch,
        batch_size=batch_size,
        fit_model=net,
        inputs=lambda n: {"latent": np.random.default_rng(0).standard_normal((n, latent_dim), np.float32)},
        output="images",
    )


def spec_sequence(batch_size=32):
    import keras

    from apps.sequence.models import build_classifier

    # The Transformer encoder of `apps.sequence train --task textclass --model transformer`: its graph traces and
    # profiles in seconds (the bi-GRU unrolled over 128 steps for TFLite takes minutes on a busy CPU).
    vocab, length = 20000, 128
    model = build_classifier("transformer", vocab, 5, length)
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy")

    def ids(n):
        return np.random.default_rng(0).integers(1, vocab, (n, length)).astype(np.int32)

    return dict(
        name="Transformer quote classifier, 128 word ids",
        model=model,
        step=_keras_step(model),
        batch=lambda n: (ids(n), np.arange(n, dtype=np.int32) % 5),
        batch_size=batch_size,
        inputs=lambda n: {"ids": ids(n)},
        output="probabilities",
    )


def spec_rl(batch_size=32):
    import keras

    from apps.rl.dqn import nature_cnn

    model = nature_cnn((84, 84, 4), 6)
    # The TD update's cost is the online network's forward + backward on the batch (plus one forward of
    # the target network, not counted here): a Huber regression on Q-values has the same graph.
    model.compile(optimizer=keras.optimizers.Adam(1e-4, epsilon=1.5e-4), loss=keras.losses.Huber())

    def frames(n):
        return _uniform((n, 84, 84, 4), dtype=np.uint8)

    return dict(
        name="Nature DQN Q-network, 84x84x4 uint8 (update without target forward)",
        model=model,
        step=_keras_step(model),
        batch=lambda n: (frames(n), _uniform((n, 6), high=1.0)),
        batch_size=batch_size,
        inputs=lambda n: {"frames": frames(n)},
        output="q_values",
    )


def spec_style(batch_size=4):
    import keras
    import tensorflow as tf

    from apps.style import app
    from apps.style.features import build_extractor

    extractor = build_extractor("random", None, 0)
    style_features = app.style_targets(extractor, _uniform((64, 64, 3)))
    net = app.build_stylizer()
    optimizer = keras.optimizers.Adam(2e-3)

    @tf.function
    def step(images):  # apps/style/stylizer.py train's step (one replica): perceptual losses through the features
        content_features = extractor(images)
        with tf.GradientTape() as tape:
            parts = app.losses_of(
                extractor, net(images, training=True), content_features, style_features, app.DEFAULT_WEIGHTS
            )
            total = parts["content"] + parts["style"] + parts["tv"]
        grads = tape.gradient(total, net.trainable_weights)
        optimizer.apply_gradients(zip(grads, net.trainable_weights))
        return total

    return dict(
        name="fast stylizer 64x64 (+ random-CNN perceptual loss)",
        model=net,
        exported=lambda: app.subpixel_twin(net, (64, 64, 3)),  # what `apps.style export` writes, at 64x64
        step=step,
        batch=lambda n: (_uniform((n, 64, 64, 3)),),
        batch_size=batch_size,
        inputs=lambda n: {"images": _uniform((n, 64, 64, 3))},
        output="stylized",
    )


SPECS = {
    "classify": spec_classify,
    "generative": spec_generative,
    "sequence": spec_sequence,
    "rl": spec_rl,
    "style": spec_style,
}


def graph_float_ops(concrete_function):
    """FLOPs of a traced graph: the TF profiler's float_ops (ops with registered FLOP statistics)."""
    from tensorflow.python.profiler import model_analyzer, option_builder

    options = option_builder.ProfileOptionBuilder(option_builder.ProfileOptionBuilder.float_operation())
    options = options.with_empty_output().build()
    return int(model_analyzer.profile(concrete_function.graph, options=options).total_float_ops)


# Ops whose work is a matrix product: what the matmul ceiling measures. The rest of a step (element-wise ops,
# normalization, reductions, copies, casts) moves memory and pays per-op overhead.
PRODUCT_OPS = ("MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "Einsum", "Conv2D", "Conv2DBackpropInput",
               "Conv2DBackpropFilter", "Conv3D", "DepthwiseConv2dNative", "DepthwiseConv2dNativeBackpropInput",
               "DepthwiseConv2dNativeBackpropFilter", "_FusedConv2D", "_FusedMatMul", "_MklMatMul", "_MklConv2D")


def step_profile(call, calls=5, top=4):
    """Where a step's time goes: TensorFlow's profiler over `calls` calls, self-time per op type (the
    framework_op_stats tool, idle time left out). (share of the time in matrix-product ops, [(op type,
    share)] of the `top` op types)."""
    import collections
    import glob

    import tensorflow as tf
    from tensorflow.python.profiler.internal import _pywrap_profiler_plugin as plugin

    folder = tempfile.mkdtemp(prefix="bench-profile-")
    try:
        tf.profiler.experimental.start(folder)
        try:
            for _ in range(calls):
                call()
        finally:
            tf.profiler.experimental.stop()
        data, ok = plugin.xspace_to_tools_data(glob.glob(f"{folder}/**/*.xplane.pb", recursive=True),
                                               "framework_op_stats", {})
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if not ok:
        raise RuntimeError("the profiler wrote no op statistics")
    table = json.loads(data)[0]
    columns = [c["id"] for c in table["cols"]]
    kind, self_time = columns.index("type"), columns.index("total_self_time")
    seconds = collections.Counter()
    for row in table["rows"]:
        cells = [c.get("v") for c in row["c"]]
        if cells[kind] != "IDLE":
            seconds[cells[kind]] += cells[self_time]
    total = sum(seconds.values())
    product = sum(t for name, t in seconds.items() if name in PRODUCT_OPS) / total
    return product, [(name, t / total) for name, t in seconds.most_common(top)]


def time_calls(call, min_seconds=1.0, max_calls=200, min_calls=3):
    """Seconds per call: the fastest of several after one warm-up call. The fastest, not the median,
    because the CPU is shared: other processes only ever add time, so the minimum is the code's own cost."""
    call()
    times, start = [], time.perf_counter()
    while len(times) < min_calls or (time.perf_counter() - start < min_seconds and len(times) < max_calls):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return float(np.min(times))


# ---------------------------------------------------------------------------------------------------------------
# Cases (each runs in its own process and returns a dict).


def matmul_gflops(n=512, min_seconds=3.0):
    """float32 matmul GFLOP/s: 2n^3 FLOPs per call, fastest of many calls."""
    import tensorflow as tf

    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))  # the sum forces the result, costs n^2
    seconds = time_calls(lambda: matmul().numpy(), min_seconds=min_seconds, max_calls=10_000)
    return 2 * n**3 / seconds / 1e9, seconds


def case_ceiling(**_):
    import tensorflow as tf

    rows = {n: matmul_gflops(n) for n in (512, 1024)}
    n = max(rows, key=lambda k: rows[k][0])
    return dict(
        case="ceiling",
        matrix=f"{n}x{n} float32 (best of 512, 1024)",
        gflops=rows[n][0],
        ms_per_matmul=rows[n][1] * 1e3,
        threads=tf.config.threading.get_intra_op_parallelism_threads() or f"all {os.cpu_count()}",
    )


def case_train(app, export_dir, steps=3, **_):
    """One app's training step: FLOPs, time, achieved FLOP/s; then export for the inference case."""
    import keras
    import tensorflow as tf

    from core import export

    keras.utils.set_random_seed(0)
    spec = SPECS[app]()
    batch = [tf.constant(t) for t in spec["batch"](spec["batch_size"])]
    spec["step"](*batch) if len(batch) == 1 else spec["step"](tuple(batch))  # trace, build the optimizer
    call = (lambda: spec["step"](*batch)) if len(batch) == 1 else (lambda: spec["step"](tuple(batch)))
    concrete = (
        spec["step"].get_concrete_function(*batch)
        if len(batch) == 1
        else spec["step"].get_concrete_function(tuple(batch))
    )
    flops = graph_float_ops(concrete)
    seconds = time_calls(
        lambda: tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, call()),
        min_seconds=2.0,
        max_calls=steps * 10,
        min_calls=steps,
    )
    train_rss = peak_rss_mb()
    try:
        product_share, top_ops = step_profile(call)
        profile = dict(product_ops_share=f"{product_share:.0%}",
                       top_ops=", ".join(f"{name} {share:.0%}" for name, share in top_ops))
    except Exception as error:  # the profiler's private tool API: the row keeps its speed
        profile = dict(product_ops_share="", top_ops=f"no profile: {str(error).splitlines()[0][:80]}")
    # The ceiling again, in this process right after the step: the same share of a shared CPU.
    ceiling, _ = matmul_gflops(min_seconds=2.0)

    model = spec["exported"]() if "exported" in spec else spec["model"]
    app_dir = os.path.join(export_dir, app)
    os.makedirs(app_dir, exist_ok=True)
    model.save(os.path.join(app_dir, "model.keras"))
    np.savez(os.path.join(app_dir, "sample.npz"), **spec["inputs"](64))
    saved = os.path.join(app_dir, "1")
    export.export_saved_model(model, saved, list(spec["inputs"](1)), [spec["output"]])
    notes = []
    for kind in TFLITE_KINDS:
        representative = [next(iter(spec["inputs"](16).values())) for _ in range(4)] if kind == "int8" else None
        try:
            export.convert_to_tflite(saved, os.path.join(app_dir, f"{kind}.tflite"), kind, representative)
        except Exception as error:  # the converter's many error types; the row says why
            notes.append(f"{kind}: {str(error).strip().splitlines()[-1][:120]}")
    return dict(
        case=f"train:{app}",
        app=app,
        model=spec["name"],
        batch=spec["batch_size"],
        step_ms=seconds * 1e3,
        examples_per_s=spec["batch_size"] / seconds,
        gflop_per_step=flops / 1e9,
        achieved_gflops=flops / seconds / 1e9,
        ceiling_gflops=ceiling,
        **profile,
        train_peak_rss_mb=train_rss,
        export_notes="; ".join(notes),
    )


def _size_mb(path):
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files) / 2**20
    return os.path.getsize(path) / 2**20


TFLITE_KINDS = ("float", "dynamic", "int8")  # core.export.convert_to_tflite's quantizations


def xnnpack_partitions(interpreter):
    """Which of an interpreter's ops the XNNPACK delegate took: (ops taken, ops in the model, partitions,
    Counter of the op names left to TFLite's builtin kernels).

    After delegation the node list holds the model's ops and one DELEGATE node per partition, whose inputs
    are the partition's boundary; walking back from a DELEGATE node's outputs to that boundary finds its ops.
    (LiteRT exposes the node list only through its private `_get_ops_details`.)"""
    import collections

    ops = interpreter._get_ops_details()
    producer = {t: op["index"] for op in ops if op["op_name"] != "DELEGATE" for t in op["outputs"]}
    taken, partitions = set(), [op for op in ops if op["op_name"] == "DELEGATE"]
    for partition in partitions:
        boundary = set(partition["inputs"])
        stack = [producer[t] for t in partition["outputs"] if t in producer]
        while stack:
            index = stack.pop()
            if index not in taken:
                taken.add(index)
                stack += [producer[t] for t in ops[index]["inputs"] if t not in boundary and t in producer]
    model_ops = [op for op in ops if op["op_name"] != "DELEGATE"]
    left = collections.Counter(op["op_name"] for op in model_ops if op["index"] not in taken)
    return len(taken), len(model_ops), len(partitions), left


def _delegation_notes(interpreter):
    taken, total, partitions, left = xnnpack_partitions(interpreter)
    left_text = ", ".join(f"{name} x{count}" if count > 1 else name for name, count in sorted(left.items()))
    return f"{taken}/{total} ops, {partitions} partition(s)", left_text or "none"


def case_inference(app, export_dir, **_):
    """Latency per example of each way of serving one app's model, batch 1 and 64."""
    import tensorflow as tf

    from core import export

    app_dir = os.path.join(export_dir, app)
    rows = []
    sample = np.load(os.path.join(app_dir, "sample.npz"), allow_pickle=False)
    batches = {size: {name: sample[name][:size] for name in sample.files} for size in (1, 64)}

    # SavedModel first: its peak RSS is the serving footprint (TF Serving loads exactly this).
    signature = tf.saved_model.load(os.path.join(app_dir, "1")).signatures[export.SIGNATURE]
    runners = {"SavedModel": lambda b: signature(**{k: tf.constant(v) for k, v in b.items()})}
    latencies = {}
    for size, b in batches.items():
        latencies[("SavedModel", size)] = time_calls(lambda: runners["SavedModel"](b), min_seconds=0.5) / size
    serving_rss = peak_rss_mb()
    sizes = {"SavedModel": _size_mb(os.path.join(app_dir, "1"))}
    interpreters, all_cores = {}, {}
    for kind in TFLITE_KINDS:
        path = os.path.join(app_dir, f"{kind}.tflite")
        if os.path.exists(path):
            runner = export.tflite_signature_runner(path)  # LiteRT's default: one thread
            runners[f"TFLite {kind}"] = lambda b, runner=runner: runner(**b)
            sizes[f"TFLite {kind}"] = _size_mb(path)
            interpreters[f"TFLite {kind}"] = runner._interpreter
            # the SavedModel uses every core: the same for LiteRT, at batch 1 (the latency a device app sees)
            threaded = export.tflite_signature_runner(path, num_threads=os.cpu_count())
            try:
                all_cores[f"TFLite {kind}"] = time_calls(lambda: threaded(**batches[1]), min_seconds=0.5)
            except Exception as error:
                all_cores[f"TFLite {kind}"] = f"failed: {str(error).splitlines()[0][:80]}"
    import importlib

    import keras

    import layers  # noqa: F401  (registers the suite's layers for load_model)

    importlib.import_module(MODEL_MODULES[app])
    model = keras.models.load_model(os.path.join(app_dir, "model.keras"), compile=False, safe_mode=True)
    runners["Keras predict"] = lambda b: model.predict(list(b.values())[0] if len(b) == 1 else b, verbose=0)
    sizes["Keras predict"] = _size_mb(os.path.join(app_dir, "model.keras"))
    for name, run in runners.items():
        for size, b in batches.items():
            if (name, size) in latencies:
                continue
            try:
                latencies[(name, size)] = time_calls(lambda: run(b), min_seconds=0.5) / size
            except Exception as error:  # e.g. an int8 file whose input is quantized differently
                latencies[(name, size)] = f"failed: {str(error).splitlines()[0][:80]}"
    delegation = {}
    for name, interpreter in interpreters.items():  # after the timed calls: the delegate is applied by then
        try:
            delegation[name] = _delegation_notes(interpreter)
        except Exception as error:  # a private API: the row keeps its latencies
            delegation[name] = (f"unknown: {str(error).splitlines()[0][:60]}", "")
    saved_model_b1 = latencies[("SavedModel", 1)]
    for name in ("Keras predict", "SavedModel", *(f"TFLite {kind}" for kind in TFLITE_KINDS)):
        if name not in runners:
            rows.append(dict(app=app, runtime=name, ms_b1="n/a", ms_b64="n/a", size_mb="n/a"))
            continue
        ms = [
            latencies[(name, s)] * 1e3 if isinstance(latencies[(name, s)], float) else latencies[(name, s)]
            for s in (1, 64)
        ]
        every_core = all_cores.get(name, latencies[(name, 1)] if name == "SavedModel" else "")
        ratio = f"{every_core / saved_model_b1:.2f}x" if isinstance(every_core, float) else ""
        taken, left = delegation.get(name, ("", ""))
        rows.append(dict(app=app, runtime=name, ms_b1=ms[0], ms_b64=ms[1], size_mb=sizes[name],
                         ms_b1_all_cores=every_core * 1e3 if isinstance(every_core, float) else every_core,
                         vs_saved_model_b1=ratio, xnnpack=taken, builtin_ops=left))
    return dict(case=f"inference:{app}", rows=rows, serving_peak_rss_mb=serving_rss)


def _classifier_data(limit):
    from apps.classify import recipes
    from core import data

    images = data.load_dataset("fashion_mnist", val_fraction=0.1, seed=0, limit=limit)
    return images, recipes.make_batch_fn(images.num_classes, ["probabilities"])


def case_throughput(variant, epochs=2, limit=1200, batch_size=128, **_):
    """Training examples/s of the default classifier on Fashion-MNIST, one way of feeding `fit`."""
    import keras

    from apps.classify.app import compile_model
    from apps.classify.models import build_model
    from core import data

    keras.utils.set_random_seed(0)
    images, batch_fn = _classifier_data(limit)
    times = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    if variant == "keras_io":
        # The keras-io example "Simple MNIST convnet" (fchollet), reimplemented here as the reference:
        # its model and its `fit` on NumPy arrays, batch 128, on the same images (no download).
        x = np.stack([x for x, _ in images.train.as_numpy_iterator()]).astype("float32") / 255
        y = keras.utils.to_categorical([y for _, y in images.train.as_numpy_iterator()], images.num_classes)
        model = keras.Sequential(
            [
                keras.Input(shape=(28, 28, 1)),
                keras.layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
                keras.layers.MaxPooling2D(pool_size=(2, 2)),
                keras.layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
                keras.layers.MaxPooling2D(pool_size=(2, 2)),
                keras.layers.Flatten(),
                keras.layers.Dropout(0.5),
                keras.layers.Dense(images.num_classes, activation="softmax"),
            ]
        )
        model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
        model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, callbacks=[Timer()])
        name = "keras-io Simple MNIST convnet (NumPy fit)"
    else:
        model = _default_classifier(build_model, images.image_shape, images.num_classes)
        compile_model(model)
        if variant == "xla":
            model.jit_compile = True  # what compile(jit_compile=True) sets
        if variant == "tuned":  # cache -> shuffle -> batch -> parallel map -> prefetch
            train = data.batched(images.train, batch_size, shuffle=True, augment=batch_fn)
        else:  # decode every epoch, map one batch at a time, no prefetch
            train = images.train.shuffle(10_000, seed=0).batch(batch_size).map(batch_fn)
        model.fit(train, epochs=epochs, verbose=0, callbacks=[Timer()])
        name = (
            _default_classifier_name()
            + {
                "plain": ", plain fit (untuned tf.data)",
                "xla": ", fit jit_compile=True (XLA)",
                "tuned": ", tuned tf.data (cache, parallel map, prefetch)",
            }[variant]
        )
    steady = min(times[1:])  # the first epoch traces (and compiles, with XLA)
    return dict(
        case=f"throughput:{variant}",
        variant=name,
        examples=images.num_train,
        examples_per_s=images.num_train / steady,
        first_epoch_s=times[0],
        steady_epoch_s=steady,
        peak_rss_mb=peak_rss_mb(),
    )


def cpu_description():
    """The CPU's model name (core.results.cpu_model) and its vector units that the levers here depend on: AVX-512
    (XLA and oneDNN differ with it) and bfloat16 units (what mixed_bfloat16 needs to pay on a CPU)."""
    from core.results import cpu_model

    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    units = [flag for flag in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if flag in flags]
    bfloat16 = "" if {"avx512_bf16", "amx_bf16"} & set(units) else ", no bfloat16 units"
    return f"{cpu_model()} ({', '.join(units) or 'no AVX2'}{bfloat16})"


def case_precision(variant, steps=24, block=4, max_seconds=20.0, **_):
    """Training examples/s of the default classifier at its budget (model, width, optimizer, batch size) under
    one --precision, with or without --jit: the fastest block of `block` steps after two warm-up steps (the
    first traces, and compiles with XLA), on one random batch (speed does not depend on the values). Blocks
    stop after `steps` steps or `max_seconds`: bfloat16 emulated on a CPU without bfloat16 units is ~7x slower."""
    import keras

    from apps.classify.app import compile_model
    from apps.classify.budgets import DEFAULT_MODEL, budget
    from apps.classify.config import TrainConfig
    from apps.classify.models import build_model
    from core import precision

    config = TrainConfig(**{**budget(DEFAULT_MODEL), "precision": variant.removesuffix("_jit"),
                            "jit": variant.endswith("_jit")})
    keras.utils.set_random_seed(0)
    with precision.policy(config.precision):
        model = compile_model(_default_classifier(build_model, (28, 28, 1), 10), config)
    x = _uniform((config.batch_size, 28, 28, 1))
    y = keras.utils.to_categorical(np.arange(config.batch_size) % 10, 10)
    start = time.perf_counter()
    model.train_on_batch(x, y)
    first = time.perf_counter() - start
    model.train_on_batch(x, y)
    blocks = []
    for _ in range(steps // block):
        start = time.perf_counter()
        for _ in range(block):
            loss = model.train_on_batch(x, y)
        blocks.append(time.perf_counter() - start)
        if sum(blocks) > max_seconds:
            break
    return dict(
        case=f"precision:{variant}",
        variant=f"{_default_classifier_name()}, {config.precision}" + (" + XLA" if config.jit else ""),
        batch=config.batch_size,
        examples_per_s=block * config.batch_size / min(blocks),
        first_step_s=first,
        loss=float(np.ravel(loss)[0]),
        cpu=cpu_description(),
        peak_rss_mb=peak_rss_mb(),
    )


def case_dqn(steps=800, **_):
    """A short sitting of `apps.rl train --task dqn` on the Pong preset; rates from its train.csv."""
    from apps.rl import dqn

    out = tempfile.mkdtemp(prefix="bench-dqn-")
    try:
        values = dict(
            dqn.PRESETS["pong"],
            steps=steps,
            learning_starts=steps // 2,
            log_every=steps // 8,
            checkpoint_every=10**9,
            buffer_size=20_000,
        )
        config = dqn.DQNConfig.from_dict(values)
        dqn.train(config, out, strategy="default", log=lambda *a, **k: None)
        with open(os.path.join(out, "train.csv")) as f:
            rows = [r for r in csv.DictReader(f) if float(r["updates_per_s"] or 0) > 0]
        last = rows[-1]
        return dict(
            case="dqn",
            implementation="this suite (apps.rl train --task dqn, Pong preset, TF)",
            env_steps_per_s=float(last["env_steps_per_s"]),
            updates_per_s=float(last["updates_per_s"]),
            num_envs=config.num_envs,
            batch=config.batch_size,
            train_freq=config.train_freq,
            peak_rss_mb=peak_rss_mb(),
        )
    finally:
        shutil.rmtree(out, ignore_errors=True)


# CleanRL's dqn_atari.py, the reference of the DQN rates, runs in its own environment .venv-cleanrl/ (PyTorch
# on the CPU, the suite's gymnasium and ale-py), built by `make bench-reference` (bench/reference/setup_cleanrl.sh:
# the pinned CleanRL release, fetched, hash-checked and patched for gymnasium 1.x; never vendored here).
CLEANRL_VENV = os.path.join(ROOT, ".venv-cleanrl")
CLEANRL_PYTHON = os.path.join(CLEANRL_VENV, "bin", "python")
CLEANRL_SCRIPT = os.path.join(CLEANRL_VENV, "cleanrl", "dqn_atari.py")
CLEANRL_STAMP = os.path.join(CLEANRL_VENV, ".installed")  # written last by the setup
# case_dqn's sitting: 800 environment steps, random play for the first half, then one update of batch 32 per
# environment step (replay ratio 1; CleanRL: train frequency 1 on its one environment), the Pong preset's
# learning rate and target sync, case_dqn's 20k replay (CleanRL's default 1M frame stacks would need 26 GiB).
# ε: CleanRL's default decay (to 0.01 by step 80), so it runs the Q-network to act on every learning step,
# as the suite does (it computes the greedy actions whatever ε).
CLEANRL_STEPS = 800
CLEANRL_LEARNING_STARTS = CLEANRL_STEPS // 2
CLEANRL_ARGS = [
    "--env-id", "PongNoFrameskip-v4",  # ALE Pong, frameskip 1 and no sticky actions, like the suite's ALE/Pong-v5
    "--total-timesteps", str(CLEANRL_STEPS),
    "--learning-starts", str(CLEANRL_LEARNING_STARTS),
    "--train-frequency", "1",
    "--batch-size", "32",
    "--learning-rate", "1e-4",
    "--buffer-size", "20000",
    "--target-network-frequency", "2000",
    "--cuda", "False",  # the CPU, like the suite's bench
]  # fmt: skip
CLEANRL_HELP = "CleanRL is not installed: run `make bench-reference` (builds .venv-cleanrl/), then rerun"


def case_cleanrl(timeout=600, **_):
    """CleanRL's dqn_atari on case_dqn's settings, in .venv-cleanrl's Python; env steps/s in the learning phase.

    The patched script prints `SPS:` every 100 steps once learning (its running average since the start);
    each line is timestamped here as it arrives, and the rate is the steps between the first and the last
    of these lines over the seconds between them: learning steps only, as the suite's row (its last
    train.csv row). One environment, one update per step, so updates/s = env steps/s."""
    import threading

    row = dict(case="cleanrl", implementation="CleanRL dqn_atari (PyTorch CPU, .venv-cleanrl)", num_envs=1, batch=32)
    if not (os.path.exists(CLEANRL_STAMP) and os.path.exists(CLEANRL_SCRIPT)):
        return dict(row, env_steps_per_s="not installed", updates_per_s="not installed", note=CLEANRL_HELP)
    run_dir = tempfile.mkdtemp(prefix="bench-cleanrl-")  # CleanRL writes its TensorBoard charts under runs/
    env = dict(os.environ, PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="")
    env.pop("PYTHONPATH", None)  # the suite's packages are not CleanRL's
    process = subprocess.Popen([CLEANRL_PYTHON, CLEANRL_SCRIPT, *CLEANRL_ARGS], cwd=run_dir, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    timed_out = threading.Event()
    timer = threading.Timer(timeout, lambda: (timed_out.set(), process.kill()))
    timer.start()
    marks, tail = [], []
    try:
        for line in process.stdout:
            if line.startswith("SPS:"):
                marks.append(time.perf_counter())
            tail = (tail + [line.strip()])[-5:]
        _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage: its peak RSS
        process.returncode = os.waitstatus_to_exitcode(status)
    finally:
        timer.cancel()
        shutil.rmtree(run_dir, ignore_errors=True)
    if timed_out.is_set():
        return dict(row, error=f"timed out after {timeout} s")
    if process.returncode != 0:
        last = next((t for t in reversed(tail) if t), "no output")
        return dict(row, error=f"exit {process.returncode}: {last[:160]}")
    if len(marks) < 2:
        return dict(row, error=f"{len(marks)} SPS line(s) in its output, 2 needed to time the learning phase")
    first = (CLEANRL_LEARNING_STARTS // 100 + 1) * 100  # the step of the first SPS line
    rate = 100 * (len(marks) - 1) / (marks[-1] - marks[0])
    return dict(row, env_steps_per_s=rate, updates_per_s=rate, peak_rss_mb=usage.ru_maxrss / 1024,
                note=f"steps {first}-{first + 100 * (len(marks) - 1)} (learning) of CleanRL 1.2.0's dqn_atari.py, "
                     "patched for gymnasium 1.x (bench/reference/)")


def run_case(name, export_dir):
    kind, _, arg = name.partition(":")
    if kind == "ceiling":
        return case_ceiling()
    if kind == "train":
        return case_train(arg, export_dir)
    if kind == "inference":
        return case_inference(arg, export_dir)
    if kind == "throughput":
        return case_throughput(arg)
    if kind == "dqn":
        return case_dqn()
    if kind == "precision":
        return case_precision(arg)
    if kind == "cleanrl":
        return case_cleanrl()
    raise SystemExit(f"unknown case {name}")


# ---------------------------------------------------------------------------------------------------------------
# The driver: one process per case, tables as rows arrive, CSVs and the docs table.


def _fmt(value, digits=3):
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


TABLES = {
    "ceiling": (
        "Compute ceiling (float32 matmul in TensorFlow)",
        [
            ("matrix", "matrix"),
            ("GFLOP/s", "gflops"),
            ("ms per matmul", "ms_per_matmul"),
            ("intra-op threads", "threads"),
            ("error", "error"),
        ],
    ),
    "train": (
        "Training step per app: FLOPs and share of the ceiling",
        [
            ("app", "app"),
            ("model", "model"),
            ("batch", "batch"),
            ("ms/step", "step_ms"),
            ("examples/s", "examples_per_s"),
            ("GFLOP/step", "gflop_per_step"),
            ("achieved GFLOP/s", "achieved_gflops"),
            ("share of ceiling", "share"),
            ("matmul GFLOP/s in the same process", "ceiling_gflops"),
            ("step time in matmul/conv ops", "product_ops_share"),
            ("op types taking the most time", "top_ops"),
            ("export notes", "export_notes"),
            ("error", "error"),
        ],
    ),
    "inference": (
        "Inference latency per example (ms) and model size",
        [
            ("app", "app"),
            ("runtime", "runtime"),
            ("batch 1 ms", "ms_b1"),
            ("batch 64 ms/example", "ms_b64"),
            ("size MB", "size_mb"),
            ("batch 1 ms, every core", "ms_b1_all_cores"),
            ("batch 1, every core, vs SavedModel", "vs_saved_model_b1"),
            ("ops taken by XNNPACK", "xnnpack"),
            ("ops left to TFLite's builtin kernels", "builtin_ops"),
        ],
    ),
    "throughput": (
        "Default classifier training throughput (Fashion-MNIST, batch 128)",
        [
            ("variant", "variant"),
            ("examples/s", "examples_per_s"),
            ("vs plain", "ratio"),
            ("first epoch s", "first_epoch_s"),
            ("steady epoch s", "steady_epoch_s"),
            ("peak RSS MB", "peak_rss_mb"),
            ("error", "error"),
        ],
    ),
    "dqn": (
        "DQN: environment steps/s and learner updates/s",
        [
            ("implementation", "implementation"),
            ("env steps/s", "env_steps_per_s"),
            ("env steps/s vs CleanRL", "vs_reference"),
            ("updates/s", "updates_per_s"),
            ("envs", "num_envs"),
            ("batch", "batch"),
            ("peak RSS MB", "peak_rss_mb"),
            ("note", "note"),
            ("error", "error"),
        ],
    ),
    "precision": (
        "Default classifier training step by precision and XLA (--precision, --jit)",
        [
            ("variant", "variant"),
            ("batch", "batch"),
            ("examples/s", "examples_per_s"),
            ("vs float32", "ratio"),
            ("first step s (trace, XLA compile)", "first_step_s"),
            ("CPU", "cpu"),
            ("error", "error"),
        ],
    ),
    "memory": (
        "Peak RSS (MB), one process per case",
        [
            ("app", "app"),
            ("training step case", "train_peak_rss_mb"),
            ("fit on Fashion-MNIST", "fit_peak_rss_mb"),
            ("DQN training", "dqn_train_peak_rss_mb"),
            ("serving (SavedModel)", "serving_peak_rss_mb"),
        ],
    ),
}


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def add_shares(ceiling_rows, train_rows):
    """Each step's achieved GFLOP/s as a share of the best matmul rate measured in this run (the
    standalone ceiling case or any case's own): the machine's ceiling, least disturbed by other load."""
    rates = [_number(r.get("gflops")) for r in ceiling_rows] + [_number(r.get("ceiling_gflops")) for r in train_rows]
    best = max([r for r in rates if r] or [0])
    for row in train_rows:
        achieved = _number(row.get("achieved_gflops"))
        if best and achieved:
            row["share"] = f"{100 * achieved / best:.1f}%"


def add_reference_ratio(dqn_rows):
    """Each DQN row's env steps/s as a multiple of CleanRL's, measured in the same run."""
    reference = next((_number(r.get("env_steps_per_s")) for r in dqn_rows
                      if str(r.get("implementation", "")).startswith("CleanRL")), None)
    for row in dqn_rows:
        rate = _number(row.get("env_steps_per_s"))
        if reference and rate:
            row["vs_reference"] = f"{rate / reference:.2f}x"


class Table:
    def __init__(self, name, quiet=False):
        self.name = name
        self.title, self.columns = TABLES[name]
        self.rows = []
        if quiet:
            return
        title, columns = self.title, self.columns
        print(f"\n## {title}\n| " + " | ".join(c for c, _ in columns) + " |\n|" + "---|" * len(columns), flush=True)

    @classmethod
    def from_csv(cls, name, path):
        table = cls(name, quiet=True)
        with open(path) as f:
            table.rows = [
                {k: (_number(v) if _number(v) is not None and k != "batch" else v) for k, v in r.items()}
                for r in csv.DictReader(f)
            ]
        return table

    def add(self, row):
        self.rows.append(row)
        print("| " + " | ".join(_fmt(row.get(key, "")) for _, key in self.columns) + " |", flush=True)

    def markdown(self):
        lines = [
            f"### {self.title}",
            "",
            "| " + " | ".join(c for c, _ in self.columns) + " |",
            "|" + "---|" * len(self.columns),
        ]
        lines += ["| " + " | ".join(_fmt(r.get(k, "")) for _, k in self.columns) + " |" for r in self.rows]
        return "\n".join(lines)

    def write_csv(self, path):
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, [k for _, k in self.columns], extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.rows)


def variants_table(section, variants, export_dir):
    """The table of `section`: one case per variant, each with its examples/s as a ratio to the first variant's
    (the reference, measured in the same run)."""
    table, reference = Table(section), None
    for variant in variants:
        result = spawn(f"{section}:{variant}", export_dir)
        result.setdefault("variant", variant)
        if variant == variants[0]:
            reference = result.get("examples_per_s")
        if reference and "examples_per_s" in result:
            result["ratio"] = f"{result['examples_per_s'] / reference:.2f}x"
        table.add(result)
    return table


def spawn(case, export_dir, timeout=600):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    start = time.perf_counter()
    try:
        result = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--case", case, "--export-dir", export_dir],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"case": case, "error": f"timed out after {timeout} s"}
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return {"case": case, "error": f"exit {result.returncode}: {last[:160]}"}
    value = json.loads(lines[-1])
    value["wall_s"] = time.perf_counter() - start
    return value


def drive(sections, apps, out, docs):
    os.makedirs(out, exist_ok=True)
    export_dir = tempfile.mkdtemp(prefix="bench-exports-")
    started = time.time()
    tables = {}

    try:
        if "ceiling" in sections or "train" in sections:
            result = spawn("ceiling", export_dir)
            table = tables["ceiling"] = Table("ceiling")
            table.add(result)

        trained = set()
        memory = {}
        if "train" in sections or "inference" in sections:
            table = tables["train"] = Table("train")
            for app in apps:
                result = spawn(f"train:{app}", export_dir)
                result.setdefault("app", app)
                add_shares(tables.get("ceiling", Table("ceiling", quiet=True)).rows, [result])  # vs the best so far
                table.add(result)
                memory[app] = {"app": app, "train_peak_rss_mb": result.get("train_peak_rss_mb", "")}
                if "error" not in result:
                    trained.add(app)
        if "inference" in sections:
            table = tables["inference"] = Table("inference")
            for app in apps:
                if app not in trained:
                    table.add({"app": app, "runtime": "skipped: no model (train case failed)"})
                    continue
                result = spawn(f"inference:{app}", export_dir)
                for row in result.get("rows", [{"app": app, "runtime": result.get("error", "?")}]):
                    table.add(row)
                memory.setdefault(app, {"app": app})["serving_peak_rss_mb"] = result.get("serving_peak_rss_mb", "")
        if "throughput" in sections:
            tables["throughput"] = variants_table("throughput", VARIANTS, export_dir)
            memory["classify"] = dict(
                memory.get("classify", {"app": "classify"}),
                fit_peak_rss_mb=tables["throughput"].rows[0].get("peak_rss_mb", ""),
            )
        if "dqn" in sections:
            table = tables["dqn"] = Table("dqn")
            result = spawn("dqn", export_dir)
            table.add(result)
            memory.setdefault("rl", {"app": "rl"})["dqn_train_peak_rss_mb"] = result.get("peak_rss_mb", "")
            table.add(case_cleanrl())  # runs CleanRL in its own process when installed
            add_reference_ratio(table.rows)
        if "precision" in sections:
            tables["precision"] = variants_table("precision", PRECISION_VARIANTS, export_dir)
        if memory:
            table = tables["memory"] = Table("memory")
            for row in memory.values():
                table.add(row)
    finally:
        shutil.rmtree(export_dir, ignore_errors=True)
    if "train" in tables:
        add_shares(tables.get("ceiling", Table("ceiling", quiet=True)).rows, tables["train"].rows)
    for name, table in tables.items():
        table.write_csv(os.path.join(out, f"{name}.csv"))
    minutes = (time.time() - started) / 60
    load = open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else ["?"] * 3
    header = (
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} in {minutes:.1f} min on "
        f"{cpu_description()}, {os.cpu_count()} CPU cores, load average {' '.join(load)} at the end "
        f"(TensorFlow {_tf_version()}, `python bench/run.py --sections {','.join(sections)} "
        f"--apps {','.join(apps)}`)."
    )
    print(f"\n{header}\nCSV files: {out}/")
    with open(os.path.join(out, "header.txt"), "w") as f:
        f.write(header)
    if docs:
        write_docs(docs, header, [t.markdown() for t in tables.values()])
        print(f"wrote {docs}")


def render(out, docs):
    """Rebuild the docs tables from the CSV files of the last run (no measuring)."""
    tables = {
        name: Table.from_csv(name, os.path.join(out, f"{name}.csv"))
        for name in TABLES
        if os.path.exists(os.path.join(out, f"{name}.csv"))
    }
    if not tables:
        raise SystemExit(f"bench/run.py: error: no CSV files in {out}; run the benchmarks first")
    if "train" in tables:
        add_shares(tables["ceiling"].rows if "ceiling" in tables else [], tables["train"].rows)
    if "dqn" in tables:
        add_reference_ratio(tables["dqn"].rows)
    header = open(os.path.join(out, "header.txt")).read() if os.path.exists(os.path.join(out, "header.txt")) else ""
    write_docs(docs, header, [t.markdown() for t in tables.values()])
    print(f"wrote {docs} from {out}/*.csv")


def _tf_version():
    try:
        from importlib.metadata import version

        return version("tensorflow")
    except Exception:
        return "?"


def write_docs(path, header, tables):
    from bench.docs_markers import write_between_markers

    write_between_markers(path, DOCS_BEGIN, DOCS_END, "\n\n".join([header, *tables]), fallback="# Benchmarks\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    parser.add_argument("--apps", default=",".join(APPS), help=f"comma list of {', '.join(APPS)}")
    parser.add_argument("--out", default=os.path.join("bench", "results", "bench"),
                        help="CSV folder, committed: what the docs tables are rendered from (default: %(default)s)")
    parser.add_argument(
        "--docs",
        default=os.path.join("docs", "bench.md"),
        help="Markdown file whose tables are regenerated ('' for none)",
    )
    parser.add_argument("--render", action="store_true", help="only rebuild --docs from the CSVs in --out")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--export-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.export_dir)))
        return
    if args.render:
        return render(args.out, args.docs)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    apps = [a.strip() for a in args.apps.split(",") if a.strip()]
    unknown = [s for s in sections if s not in SECTIONS] + [a for a in apps if a not in APPS]
    if unknown:
        raise SystemExit(f"bench/run.py: error: unknown section or app: {', '.join(unknown)}")
    drive(sections, apps, args.out, args.docs)


if __name__ == "__main__":
    main()
