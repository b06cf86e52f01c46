"""Training with the callbacks every app wants, and run folders that resume.

A run folder holds everything one training run writes:

  config.json      the arguments the run was started with
  model.keras      the best model so far on the validation loss (written atomically)
  model.keras.best.json  its validation loss and epoch
  backup/          BackupAndRestore state: a killed run resumes from here
  history.csv      one row per epoch (appended across resumes)
  logs/            TensorBoard event files
  learning_curves.png

A run whose loss becomes NaN or infinite stops with a `UserError` that names
the epoch and batch, and the best checkpoint written before stays loadable.
A run folder that cannot be written (read-only, under a file, disk full) is a
`UserError` too, not a traceback.
"""

import json
import math
import os
import sys
import tempfile

import keras

from core.errors import UserError

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
            raise UserError(f"{run_dir} holds another run ({details}); pass a different --out or delete it")
    make_output_dir(run_dir)
    try:
        _write_json_atomically(path, config)
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or error}") from None


def make_output_dir(path):
    """Create an output folder and check that files can be written in it.

    A folder that cannot be created (a path under a regular file, no
    permission) or written (read-only, full disk) is the user's to fix, so it
    is a one-line `UserError` before any long work starts, not a traceback
    at the first checkpoint.
    """
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise UserError(f"cannot write to the output folder {path}: {error.strerror or error}") from None
    return path


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


def load_config(run_dir):
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.exists(path):
        raise UserError(f"no training run in {run_dir} (missing {CONFIG_FILE}); run 'train' first or pass --out")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise UserError(f"corrupt {path}: {error}") from None


def load_trained_model(run_dir, compile=False):
    """The run's best model, for inference (evaluate, export, predict, visualize).

    Not compiled by default: the optimizer (and any custom learning-rate
    schedule in it) is not needed for inference; resuming training goes
    through the BackupAndRestore state instead.
    """
    path = os.path.join(run_dir, MODEL_FILE)
    if not os.path.exists(path):
        raise UserError(f"no trained model in {run_dir} (missing {MODEL_FILE}); run 'train' first")
    try:
        return keras.models.load_model(path, compile=compile)
    except Exception as error:  # a truncated zip, a foreign file, ...
        raise UserError(f"cannot load {path}: {str(error).splitlines()[0][:200]}") from None


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
            _write_json_atomically(self.state_path, {"best": value, "epoch": epoch, "monitor": self.monitor})
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


def _write_json_atomically(path, value):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def callbacks(run_dir, *, monitor="val_loss", patience=None, writes_files=True):
    """Checkpoint, resume, early stopping, TensorBoard and CSV history.
    `monitor=None` checkpoints the last finite epoch (no early stopping then).

    On a non-chief multi-worker task (`writes_files=False`) the checkpoints go
    to a throwaway folder: every worker must run the same callbacks, but
    only the chief's files are kept.
    """
    folder = run_dir if writes_files else tempfile.mkdtemp(prefix="worker-")
    backup = os.path.join(folder, "backup")
    best = BestModelCheckpoint(os.path.join(folder, MODEL_FILE), monitor=monitor)
    history = os.path.join(folder, "history.csv")
    if not os.path.exists(backup):  # a fresh run, not a resume: its own "best so far" and history
        for finished_run_file in (best.state_path, history):
            if os.path.exists(finished_run_file):
                os.remove(finished_run_file)
    result = [
        # double_checkpoint keeps the previous backup, used if the latest is corrupt.
        keras.callbacks.BackupAndRestore(backup, double_checkpoint=True),
        best,
        keras.callbacks.CSVLogger(history, append=True),  # appended across resumes
        keras.callbacks.TensorBoard(os.path.join(folder, "logs")),
        StopOnNaN(),
    ]
    if patience:
        if monitor is None:
            raise UserError("early stopping (--patience) needs a validation loss to watch; this model has none")
        result.append(keras.callbacks.EarlyStopping(monitor=monitor, patience=patience, restore_best_weights=True))
    return result


def fit(model, train_data, val_data, *, epochs, run_dir, monitor="val_loss", patience=None,
        writes_files=True, extra_callbacks=(), class_weight=None):
    """`model.fit` with the suite's callbacks; writes the learning-curve PNG.

    Rerunning the same command after a kill resumes from the last finished
    epoch (BackupAndRestore) and stops at the same total number of epochs.

    Raises `UserError` when a loss becomes NaN or infinite (after writing
    the learning curves); the best checkpoint from before stays in place.
    """
    from core import plots

    if epochs < 1:
        raise UserError(f"the number of epochs must be at least 1, got {epochs}")
    verbose = 1 if sys.stdout.isatty() else 2  # one line per epoch in logs
    run_callbacks = callbacks(run_dir, monitor=monitor, patience=patience, writes_files=writes_files)
    history = model.fit(
        train_data, validation_data=val_data, epochs=epochs, verbose=verbose, class_weight=class_weight,
        shuffle=False,  # the tf.data pipeline shuffles
        callbacks=run_callbacks + list(extra_callbacks))
    if writes_files:
        plots.learning_curves(os.path.join(run_dir, "history.csv"), os.path.join(run_dir, "learning_curves.png"))
    nan_stop = next(c for c in run_callbacks if isinstance(c, StopOnNaN))
    if nan_stop.stopped_at:
        raise UserError(nan_stop.message(next(c for c in run_callbacks if isinstance(c, BestModelCheckpoint))))
    return history
