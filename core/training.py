"""Training with the callbacks every app wants, and run folders that resume.

A run folder holds everything one training run writes:

  config.json      the arguments the run was started with
  model.keras      the best model so far on the validation loss (written atomically)
  model.keras.best.json  its validation loss and epoch
  backup/          resume state (weights, optimizer, epoch and batch): the last
                   two checkpoints, after each epoch and where a SIGTERM arrived
  history.csv      one row per epoch (appended across resumes, never twice)
  logs/            TensorBoard event files
  learning_curves.png

A run whose loss becomes NaN or infinite stops with a `UserError` that names
the epoch and batch, and the best checkpoint written before stays loadable.
A run folder that cannot be written (read-only, under a file, disk full) is a
`UserError` too, not a traceback.

Rerunning the command of a killed run resumes it (see `core.checkpoints`):
from the newest backup, or with one line saying why from the one before when
the newest is damaged. SIGTERM (preemption, `docker stop`) saves a backup at
the next batch boundary and stops with `Preempted` (exit 143 from `run_cli`);
the rerun goes on with the batches of that epoch the run had not trained on.
"""

import json
import math
import os
import sys
import tempfile
import time

import keras

from core import checkpoints, results
from core.checkpoints import make_output_dir, write_json_atomically
from core.errors import UserError, first_line
from core.resume import ResumeBackup

CONFIG_FILE = "config.json"
MODEL_FILE = "model.keras"


def set_seed(seed):
    """Seed Python, NumPy and TensorFlow so runs repeat."""
    keras.utils.set_random_seed(seed)


def save_config(run_dir, config, identity_keys=()):
    """Write the run's config; refuse to mix two different runs in one folder.

    `identity_keys` name the settings that must match an existing run in the
    folder for the new command to be its continuation (e.g. model, dataset).
    """
    path = os.path.join(run_dir, CONFIG_FILE)
    if os.path.exists(path):
        old = load_config(run_dir)
        clashes = [k for k in identity_keys if old.get(k) != config.get(k)]
        if clashes:
            details = ", ".join(f"{k}={old.get(k)!r}" for k in clashes)
            raise UserError(f"{run_dir} holds another run ({details}); give this run its own folder with --run DIR, "
                            f"or delete it")
    make_output_dir(run_dir)
    try:
        write_json_atomically(path, config)
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or error}") from None


def start_run(run_dir, config, strategy, *, dataset_name, num_examples, global_batch,
              identity_keys=("model", "dataset")):
    """Begin a training run: the chief records its config (refusing a folder
    that holds another run) and the run's header is printed. Returns whether
    this worker writes files (see `callbacks`)."""
    from core import distribute

    writes_files = distribute.is_chief(strategy)
    if writes_files:
        save_config(run_dir, config, identity_keys=identity_keys)
    print(f"training {config['model']} on {dataset_name} ({num_examples} examples, "
          f"{strategy.num_replicas_in_sync} replica(s), global batch {global_batch})")
    return writes_files


class RunConfig(dict):
    """A run's config.json: a key it lacks (a run of another app, or of an older version) is a
    one-line `UserError` that names the file, not a `KeyError`."""

    path = CONFIG_FILE

    def __missing__(self, key):
        raise UserError(f"{self.path} has no '{key}': it is not the config of a run of this command "
                        f"(another app's, or an older version's); pass the right --run or train again")


def read_json(path, what="JSON file"):
    """The value in JSON file `path`, or a one-line `UserError` saying what is wrong with the file
    (unreadable, empty, truncated, binary)."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
        return json.loads(text)
    except UnicodeDecodeError:
        raise UserError(f"corrupt {path}: not UTF-8 text (a binary file?); it should be a {what}") from None
    except json.JSONDecodeError as error:
        reason = "empty file" if not text.strip() else str(error)
        raise UserError(f"corrupt {path}: {reason}; it should be a {what}") from None
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror or error}") from None


def read_json_object(path, what="JSON object"):
    """`read_json`, refusing anything but a JSON object (a list, a number, ...)."""
    value = read_json(path, what)
    if not isinstance(value, dict):
        raise UserError(f"corrupt {path}: not a JSON object (it holds a {type(value).__name__}); "
                        f"it should be a {what}")
    return value


def load_config(run_dir):
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.exists(path):
        raise UserError(f"no training run in {run_dir} (missing {CONFIG_FILE}); run 'train' first or pass --run DIR")
    config = RunConfig(read_json_object(path, "run's config (a JSON object)"))
    config.path = path
    return config


def load_model_file(path, compile=False):
    """A `.keras` file's model, loaded in safe mode (no code from the file runs: a Lambda layer's
    pickled bytecode is refused). A file that is not a `.keras` model (empty, truncated, text,
    another zip) is a one-line `UserError` that says so; Keras itself calls such a file "not
    found"."""
    import zipfile

    if not os.path.isfile(path):
        raise UserError(f"model file not found: {path}")
    size = os.path.getsize(path)
    if not zipfile.is_zipfile(path):
        why = "empty: 0 bytes" if size == 0 else f"not a zip archive: corrupt or truncated, {size} bytes"
        raise UserError(f"cannot load {path}: not a .keras model file ({why})")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as error:
        raise UserError(f"cannot load {path}: not a .keras model file ({first_line(error)}: corrupt or "
                        f"truncated)") from None
    if "config.json" not in names:
        raise UserError(f"cannot load {path}: not a .keras model file (a zip archive with no config.json; "
                        f"it holds {', '.join(names[:3]) or 'nothing'})")
    try:
        return keras.models.load_model(path, compile=compile, safe_mode=True)
    except Exception as error:  # a damaged member, a class this program does not know, ...
        raise UserError(f"cannot load {path}: {first_line(error)}") from None


def load_trained_model(run_dir, compile=False, input_shape=None):
    """The run's best model, for inference (evaluate, export, predict, visualize).

    Not compiled by default: the optimizer (and any custom learning-rate
    schedule in it) is not needed for inference; resuming training goes
    through the resume backups instead (`ResumeBackup`). With `input_shape`
    (one example's shape, from the run's config), a model that takes
    something else (a model.keras of another run) is a one-line `UserError`.
    """
    path = os.path.join(run_dir, MODEL_FILE)
    if not os.path.exists(path):
        raise UserError(f"no trained model in {run_dir} (missing {MODEL_FILE}); run 'train' first")
    model = load_model_file(path, compile=compile)
    if input_shape is not None:
        check_input_shape(model, input_shape, path)
    return model


def check_input_shape(model, expected, path):
    """Refuse, in one line, a model none of whose inputs takes examples of shape `expected`."""
    try:
        shapes = [tuple(tensor.shape[1:]) for tensor in model.inputs]
    except (AttributeError, TypeError, ValueError):  # a subclassed model that was never built
        return
    expected = tuple(expected)

    def fits(got):
        return len(got) == len(expected) and all(g is None or e is None or g == e for g, e in zip(got, expected))

    if shapes and not any(fits(got) for got in shapes):
        raise UserError(f"{path} takes inputs of shape {' and '.join(str(got) for got in shapes)}, but "
                        f"{CONFIG_FILE} says {expected}: the model belongs to another run; pass the right --run "
                        f"or train again")


def first_non_finite_loss(logs):
    """(name, value) of the first scalar `*loss` entry of Keras logs that is NaN or infinite, or None."""
    for name, value in (logs or {}).items():
        try:
            value = float(value)
        except (TypeError, ValueError):  # not a scalar
            continue
        if name.endswith("loss") and not math.isfinite(value):
            return name, value
    return None


class BestModelCheckpoint(keras.callbacks.Callback):
    """Save the whole model when `monitor` improves, atomically.

    The model is written to a temporary file and renamed over `path`, so a
    kill mid-save never leaves a half-written checkpoint. The best value is
    kept beside it (`<path>.best.json`) so a resumed run keeps comparing
    against the best epoch before the kill, not against infinity.

    `monitor=None` keeps the last epoch instead (a GAN has no validation loss
    to pick the best by), except an epoch whose logged losses are not finite.
    """

    def __init__(self, path, monitor="val_loss", mode=None):
        super().__init__()
        self.path, self.monitor = path, monitor
        self.mode = mode or ("max" if monitor and "acc" in monitor else "min")
        self.state_path = f"{path}.best.json"
        self.best = None

    def on_train_begin(self, logs=None):
        self.best = -math.inf if self.mode == "max" else math.inf
        if self.monitor and os.path.exists(self.state_path):
            with open(self.state_path) as f:
                self.best = json.load(f)["best"]

    def _improved(self, value):
        return value > self.best if self.mode == "max" else value < self.best

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor is None:
            value = None
            if first_non_finite_loss(logs):
                return
        else:
            value = logs.get(self.monitor)
            if value is None or not self._improved(float(value)):
                return
            value = float(value)
        tmp = f"{self.path}.tmp.keras"  # Keras wants the .keras suffix
        try:
            self.model.save(tmp)
            os.replace(tmp, self.path)
            write_json_atomically(self.state_path, {"best": value, "epoch": epoch, "monitor": self.monitor})
        except OSError as error:  # a full disk: the previous checkpoint is still whole
            if os.path.isfile(tmp):
                os.remove(tmp)
            raise UserError(f"cannot write the checkpoint {self.path}: {error.strerror or error}") from None
        self.best = value


class StopOnNaN(keras.callbacks.TerminateOnNaN):
    """Keras' `TerminateOnNaN` that watches every loss in the logs (a GAN
    logs `d_loss` and `g_loss`, not `loss`) and remembers where it stopped,
    so `fit` can say so. The stop is graceful: the other callbacks finish
    (the NaN epoch is not better than the best checkpoint, so that stays)."""

    def __init__(self):
        super().__init__()
        self.stopped_at = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_batch_end(self, batch, logs=None):
        broken = first_non_finite_loss(logs)
        if broken:
            name, value = broken
            self.stopped_at = dict(epoch=getattr(self, "epoch", 0), batch=batch, name=name, value=value)
            self.model.stop_training = True

    def message(self, checkpoint):
        """Where the loss broke, and what `checkpoint` (the run's BestModelCheckpoint) kept."""
        where = self.stopped_at
        text = (f"training stopped: {where['name']} became {where['value']} at epoch {where['epoch'] + 1}, "
                f"batch {where['batch'] + 1}")
        if os.path.exists(checkpoint.state_path):
            with open(checkpoint.state_path) as f:
                best = json.load(f)
            score = f", {best['monitor']} {best['best']:.4g}" if best["monitor"] else ""
            text += f"; the checkpoint {checkpoint.path} (epoch {best['epoch'] + 1}{score}) is kept"
        else:
            text += "; no checkpoint was saved before it"
        return text + "; try a lower learning rate"


class TrainingClock(keras.callbacks.Callback):
    """Adds each epoch's wall time to the run's training_time.json (core.results reads it): the training
    time of a run, summed across resumes, and the highest 1-minute load average seen at an epoch's end (a
    time measured on a shared machine says so)."""

    def __init__(self, folder):
        super().__init__()
        self.folder = folder

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = (results.training_seconds(self.folder) or 0.0) + time.perf_counter() - self.start
        load = max(results.training_load(self.folder) or 0.0, os.getloadavg()[0])
        write_json_atomically(os.path.join(self.folder, results.CLOCK_FILE),
                              {"seconds": round(seconds, 3), "load_average_max": round(load, 2)})


def callbacks(run_dir, *, monitor="val_loss", patience=None, writes_files=True, extra=()):
    """Best checkpoint, CSV history, TensorBoard, NaN stop, early stopping, the `extra` callbacks
    and, last, the resume backup (`ResumeBackup`). `monitor=None` checkpoints the last finite
    epoch (no early stopping then).

    On a non-chief multi-worker task (`writes_files=False`) the checkpoints go
    to a throwaway folder: every worker must run the same callbacks, but
    only the chief's files are kept.
    """
    folder = run_dir if writes_files else tempfile.mkdtemp(prefix="worker-")
    result = [
        BestModelCheckpoint(os.path.join(folder, MODEL_FILE), monitor=monitor),
        keras.callbacks.CSVLogger(os.path.join(folder, "history.csv"), append=True),  # appended across resumes
        keras.callbacks.TensorBoard(os.path.join(folder, "logs")),
        StopOnNaN(),
        TrainingClock(folder),
    ]
    if patience:
        if monitor is None:
            raise UserError("early stopping (--patience) needs a validation loss to watch; this model has none")
        result.append(keras.callbacks.EarlyStopping(monitor=monitor, patience=patience, restore_best_weights=True))
    return result + list(extra) + [ResumeBackup(os.path.join(folder, "backup"),
                                                resume_from=os.path.join(run_dir, "backup"))]


class ShuffleEpoch(keras.callbacks.Callback):
    """Shuffles each epoch of a `core.data.batched(shuffle=True)` pipeline by its epoch number: sets the
    pipeline's epoch counter before Keras makes the epoch's iterator, so neither the iterator Keras 3's
    `fit` makes to build the model under a distribution strategy nor a resume in a new process shifts
    the order (see `core.data._shuffled_by_epoch`). Epoch E sees the same batches in the same order
    under every strategy, and a resumed run the same batches as an uninterrupted one."""

    def __init__(self, counter):
        super().__init__()
        self.counter = counter

    def on_epoch_begin(self, epoch, logs=None):
        self.counter.assign(epoch - 1)  # the next pass increments it


def _find(callback_list, kind):
    return next(c for c in callback_list if isinstance(c, kind))


def _start_files(callback_list, start):
    """A fresh run (`start` None) gets its own "best so far" and history; a resumed one keeps the
    history rows of the epochs before `start` only (a redone epoch is not logged twice)."""
    best, history = _find(callback_list, BestModelCheckpoint), _find(callback_list, keras.callbacks.CSVLogger)
    if start is None:
        for finished_run_file in (best.state_path, history.filename):
            if os.path.exists(finished_run_file):
                os.remove(finished_run_file)
    else:
        checkpoints.trim_csv(history.filename, lambda row: int(row["epoch"]) < start[0])


def _fit_from(model, train_data, start, epochs, backup, **fit_args):
    """`model.fit` from `start` (epochs done, batches of the next done) to `epochs`. A run stopped
    mid-epoch first finishes that epoch on the batches it had not trained on."""
    epoch, batch = start or (0, 0)
    if batch:
        backup.batch_offset = batch
        first = model.fit(train_data.skip(batch), initial_epoch=epoch, epochs=epoch + 1, **fit_args)
        epoch += 1
        if model.stop_training or epoch >= epochs:
            return first
        rest = model.fit(train_data, initial_epoch=epoch, epochs=epochs, **fit_args)
        rest.epoch = first.epoch + rest.epoch
        rest.history = {k: first.history.get(k, []) + v for k, v in rest.history.items()}
        return rest
    return model.fit(train_data, initial_epoch=epoch, epochs=epochs, **fit_args)


def fit(model, train_data, val_data, *, epochs, run_dir, monitor="val_loss", patience=None,
        writes_files=True, extra_callbacks=(), class_weight=None):
    """`model.fit` with the suite's callbacks; writes the learning-curve PNG.

    Rerunning the same command after a kill resumes from the last backup
    (the last finished epoch, or the batch where a SIGTERM stopped it) and
    stops at the same total number of epochs; `Preempted` is raised after
    a SIGTERM (see the module's doc). In multi-worker training a SIGTERM to
    any worker stops every worker at the same batch (`ResumeBackup`), the
    chief's backup holds that batch, and all workers resume from it.

    Raises `UserError` when a loss becomes NaN or infinite (after writing
    the learning curves); the best checkpoint from before stays in place.
    Data holding a NaN or infinity is refused before any step or file (one
    pass over each dataset: on some CPUs a NaN input never reaches the loss).
    """
    import tensorflow as tf

    from core import data, distribute, finite, plots

    if epochs < 1:
        raise UserError(f"the number of epochs must be at least 1, got {epochs}")
    finite.check_finite(train_data, "the training data")
    finite.check_finite(val_data, "the validation data")
    verbose = 1 if sys.stdout.isatty() else 2  # one line per epoch in logs
    run_callbacks = callbacks(run_dir, monitor=monitor, patience=patience, writes_files=writes_files,
                              extra=extra_callbacks)
    backup = run_callbacks[-1]
    counter = data.shuffle_epoch_counter(train_data)
    if counter is not None:
        run_callbacks.insert(0, ShuffleEpoch(counter))
    backup.mid_epoch = isinstance(train_data, tf.data.Dataset)  # else SIGTERM waits for the epoch's end
    strategy = getattr(model, "distribute_strategy", None)
    if distribute.num_workers(strategy) > 1:  # all workers stop at the same batch (see ResumeBackup)
        backup.agree = distribute.any_worker(strategy)
    start = backup.resume_point()
    _start_files(run_callbacks, start)
    with checkpoints.stop_on_sigterm():
        history = _fit_from(model, train_data, start, epochs, backup, validation_data=val_data, verbose=verbose,
                            class_weight=class_weight, callbacks=run_callbacks,
                            shuffle=False)  # the tf.data pipeline shuffles
    backup.remove()
    if writes_files:
        plots.learning_curves(os.path.join(run_dir, "history.csv"), os.path.join(run_dir, "learning_curves.png"))
    nan_stop = _find(run_callbacks, StopOnNaN)
    if nan_stop.stopped_at:
        raise UserError(nan_stop.message(_find(run_callbacks, BestModelCheckpoint)))
    return history
