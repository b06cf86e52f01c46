"""Resuming `core.training.fit`: the `ResumeBackup` callback and its checkpoint files.

Each backup is a folder `backup/epoch-<E>-batch-<B>` of a `CheckpointFolder`
(`core.checkpoints`: written whole, the last two kept, a damaged newest one
reported and the previous used) holding the weights and optimizer state and a
`state.json` with the epoch, batch and optimizer step. A backup is written
after every epoch and at the batch where a SIGTERM arrived.
"""

import json
import os
import shutil

import keras

from core import checkpoints
from core.checkpoints import CheckpointFolder, CorruptCheckpoint, write_json_atomically
from core.errors import Preempted, UserError, first_line

BACKUP_WEIGHTS, BACKUP_STATE = "model.weights.h5", "state.json"


class ResumeBackup(keras.callbacks.Callback):
    """The resume state of `fit` in `backup/`: weights and optimizer (`model.weights.h5`) with the
    epoch, batch and optimizer step they belong to (`state.json`), one folder per checkpoint,
    `epoch-<E>-batch-<B>` (E epochs done, then B batches of the next). Saved after every epoch and
    at the batch where a SIGTERM arrived; the last two are kept (`core.checkpoints`).

    It runs after the other callbacks of an epoch, so the epoch's history row and best model are
    written before its backup: a kill in between redoes the epoch, whose row is then trimmed.

    Multi-worker training: every worker must stop at the same batch (a worker that goes on waits
    forever in the next step's all-reduce for one that stopped). With `agree` set (by `fit`, to
    `core.distribute.any_worker`), each worker's SIGTERM flag is all-reduced at every batch end
    and epoch end, so a SIGTERM to any worker stops all of them at the same batch. Each writes
    its backup in `folder` (a non-chief: a throwaway one) and resumes from `resume_from`, the
    chief's (a folder all workers see)."""

    def __init__(self, folder, log=print, resume_from=None):
        super().__init__()
        self.checkpoints = CheckpointFolder(folder, "epoch-")
        self.resume_from = CheckpointFolder(resume_from, "epoch-") if resume_from else self.checkpoints
        self.agree = None  # multi-worker: flag -> whether it is set on any worker (see the class's doc)
        self.log = log
        self.epoch = 0
        self.batch_offset = 0  # batches of this epoch trained before a resume (not seen by this `fit`)
        self.mid_epoch = True  # whether a SIGTERM may save mid-epoch (the data can skip batches to resume)
        self._to_load = None

    def resume_point(self):
        """(epochs done, batches of the next done) of the newest usable backup, or None (a fresh
        run). Files only: the weights are loaded when training begins (the model is built then)."""
        chosen = self.resume_from.restore(_check_backup, _backup_label, log=self.log)
        if chosen is None:
            if os.path.exists(os.path.join(self.resume_from.folder, "training_metadata.json")):
                self.log(f"{self.resume_from.folder} holds the resume state of an older version: starting over")
            return None
        self._to_load = chosen
        return chosen[1]["epoch"], chosen[1]["batch"]

    def on_train_begin(self, logs=None):
        if self._to_load:
            path, state = self._to_load
            self._to_load = None
            _load_backup(self.model, path, state, self.resume_from.folder)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        last_batch = self.params.get("steps") == batch + 1  # on_epoch_end saves in a moment
        # The same on every worker (the step count, NaN and early stops come from all-reduced logs),
        # so all of them call `_stop_here` at the same batches.
        if not self.mid_epoch or self.model.stop_training or last_batch:
            return
        stop, here = self._stop_here()
        if stop:
            done = self.batch_offset + batch + 1
            path = self.save(self.epoch, done)
            raise Preempted(self._stopped(here, f"at epoch {self.epoch + 1}, batch {done}", path))

    def on_epoch_end(self, epoch, logs=None):
        self.batch_offset = 0
        if self.model.stop_training:  # NaN loss or early stopping: the run ends here, no resume
            return
        path = self.save(epoch + 1, 0)
        stop, here = self._stop_here()
        if stop:
            raise Preempted(self._stopped(here, f"after epoch {epoch + 1}", path))

    def _stop_here(self):
        """(stop now, SIGTERM arrived in this process): with `agree`, stop when any worker got one."""
        here = checkpoints.stop_requested()
        return (self.agree(here) if self.agree else here), here

    def _stopped(self, here, where, path):
        # The checkpoint a rerun resumes from: the chief's (a non-chief writes a throwaway copy).
        path = os.path.join(self.resume_from.folder, os.path.basename(path))
        return (f"stopped by SIGTERM{'' if here else ' to another worker'} {where}; saved {path}; "
                f"rerun the same command to resume")

    def save(self, epoch, batch):
        optimizer = self.model.optimizer
        state = {"epoch": epoch, "batch": batch,
                 "iterations": _step_of(optimizer) if optimizer is not None else None}

        def write(folder):
            self.model.save_weights(os.path.join(folder, BACKUP_WEIGHTS))
            write_json_atomically(os.path.join(folder, BACKUP_STATE), state)

        return self.checkpoints.save(_backup_name(epoch, batch), write)

    def remove(self):
        """The run is over: a rerun starts afresh."""
        shutil.rmtree(self.checkpoints.folder, ignore_errors=True)


def _backup_name(epoch, batch):
    return f"epoch-{epoch:06d}-batch-{batch:06d}"


def _backup_label(chosen):
    _, state = chosen
    return f"epoch {state['epoch']}" + (f", batch {state['batch']}" if state["batch"] else "")


def _check_backup(path):
    """(path, state) when the backup's files are whole and agree; else `CorruptCheckpoint`."""
    import h5py

    try:
        with open(os.path.join(path, BACKUP_STATE)) as f:
            state = json.load(f)
        epoch, batch = int(state["epoch"]), int(state["batch"])
    except FileNotFoundError:
        raise CorruptCheckpoint(f"{BACKUP_STATE} is missing") from None
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise CorruptCheckpoint(f"{BACKUP_STATE}: {first_line(error)}") from None
    if os.path.basename(path) != _backup_name(epoch, batch):
        raise CorruptCheckpoint(f"{BACKUP_STATE} says epoch {epoch}, batch {batch}")
    weights = os.path.join(path, BACKUP_WEIGHTS)
    if not os.path.exists(weights):
        raise CorruptCheckpoint(f"{BACKUP_WEIGHTS} is missing")
    try:
        with h5py.File(weights, "r") as f:  # read every array: a damaged file fails here, not in fit
            f.visititems(lambda name, item: item[()] if isinstance(item, h5py.Dataset) else None)
    except Exception as error:  # h5py raises OSError, KeyError, RuntimeError, ...
        raise CorruptCheckpoint(f"{BACKUP_WEIGHTS}: {first_line(error)}") from None
    return path, state


def _load_backup(model, path, state, folder):
    optimizer = model.optimizer
    if optimizer is not None and not optimizer.built:  # its slots must exist to be loaded
        optimizer.build(model.trainable_variables)
    try:
        model.load_weights(os.path.join(path, BACKUP_WEIGHTS))
    except Exception as error:  # a model that changed since, ...
        raise UserError(f"cannot resume from {path}: {first_line(error)}; delete {folder} to start over") from None
    saved = state.get("iterations")
    if optimizer is not None and saved is not None and _step_of(optimizer) != saved:
        raise UserError(f"cannot resume from {path}: its weights are of optimizer step {_step_of(optimizer)}, "
                        f"its {BACKUP_STATE} says {saved}; delete {folder} to start over")


def _step_of(optimizer):
    return int(keras.ops.convert_to_numpy(optimizer.iterations))
