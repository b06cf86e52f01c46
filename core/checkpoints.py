"""Checkpoints that survive kills, damage, full disks and preemption.

`CheckpointFolder` is the folder of one training run's resume state (Keras
apps: `backup/` of the run folder; DQN: `checkpoints/`). Each checkpoint is
a sub-folder `<prefix><number>` written under a temporary name and renamed
once complete, so a kill at any moment leaves the earlier ones whole. The
last two are kept: on resume the newest is checked (its files parse, load and
agree), and a damaged one is reported in one line

    resuming from the previous checkpoint (epoch 2): the newest is corrupt: <reason>

and the one before is used. Only when none is usable does resuming stop with
a one-line `UserError`. A checkpoint that cannot be written (full disk,
read-only folder) is a one-line `UserError` too, and the checkpoints before
it stay as they were.

Preemption: while `stop_on_sigterm()` is active, SIGTERM (what a cluster
scheduler or `docker stop` sends) does not kill the process; it sets a flag
that the training loop checks at its next step boundary (`stop_requested()`),
where it saves a checkpoint and raises `core.errors.Preempted` (exit 143 from
`run_cli`). A second SIGTERM kills at once.
"""

import contextlib
import csv
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading

from core.errors import UserError

PARTIAL = ".partial-"


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


class CorruptCheckpoint(Exception):
    """Raised by a checkpoint loader: this checkpoint cannot be used (the message says why)."""


def write_errors():
    """What a failed write raises: `OSError` (Python, NumPy, h5py) or TensorFlow's `OpError`
    (checkpoint and SavedModel writers: `ResourceExhaustedError` for a full disk, ...)."""
    import tensorflow as tf

    return OSError, tf.errors.OpError


def write_error_reason(error):
    """Why a write failed, in a few words: 'No space left on device', 'Read-only file system', ..."""
    if isinstance(error, OSError) and error.errno:
        return os.strerror(error.errno)
    # TensorFlow: "{{function_node ...}} <path>; No space left on device [Op:SaveV2]"
    # The whole first line, not `first_line`'s 200 characters: the reason is at its end.
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return re.sub(r"\s*\[Op:\w+\]$", "", text).rsplit("; ", 1)[-1].strip()


@contextlib.contextmanager
def quiet_write_failures():
    """h5py reports a failed write once as an exception and again, as "Exception ignored",
    for every object it closes afterwards: keep the repeats off the terminal."""
    previous = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    try:
        yield
    finally:
        sys.unraisablehook = previous


class CheckpointFolder:
    """The complete checkpoints `<folder>/<prefix>*`, newest (highest name) first.

    Names must sort in training order (zero-padded numbers)."""

    def __init__(self, folder, prefix, keep=2):
        self.folder, self.prefix, self.keep = folder, prefix, keep

    def names(self):
        if not os.path.isdir(self.folder):
            return []
        return sorted((n for n in os.listdir(self.folder) if n.startswith(self.prefix)
                       and os.path.isdir(os.path.join(self.folder, n))), reverse=True)

    def newest(self):
        names = self.names()
        return os.path.join(self.folder, names[0]) if names else None

    def save(self, name, write):
        """Write checkpoint `name` by `write(folder)`, then keep it and the newest older one.

        Checkpoints newer than `name` belong to a future abandoned by resuming
        from an older one (the newest was damaged): they are removed too."""
        final = os.path.join(self.folder, name)
        partial = os.path.join(self.folder, PARTIAL + name)
        try:
            os.makedirs(self.folder, exist_ok=True)
            _remove(partial)  # left by a kill
            os.makedirs(partial)
            with quiet_write_failures():
                write(partial)
            _remove(final)  # the same step saved again (or a damaged one): replaced
            os.rename(partial, final)
        except write_errors() as error:
            _remove(partial, ignore_errors=True)
            kept = self.newest()
            raise UserError(f"cannot write the checkpoint {final}: {write_error_reason(error)}; "
                            + (f"{kept} is kept" if kept else "no earlier checkpoint exists")) from None
        older = [n for n in self.names() if n < name][:self.keep - 1]
        for entry in os.listdir(self.folder):  # the rest, including files of older layouts
            if entry not in [name] + older:
                _remove(os.path.join(self.folder, entry), ignore_errors=True)
        return final

    def restore(self, load, label, log=print):
        """`load(path)` of the newest usable checkpoint, or None when there is none.

        `load` raises `CorruptCheckpoint` for a damaged checkpoint; the next
        older one is tried then, with one line through `log`, where
        `label(result of load)` names the one used ("epoch 2", "agent step 400")."""
        problems = []
        for name in self.names():
            path = os.path.join(self.folder, name)
            try:
                result = load(path)
            except CorruptCheckpoint as error:
                problems.append(f"{name}: {error}")
                continue
            if problems:
                log(f"resuming from the previous checkpoint ({label(result)}): the newest is corrupt: {problems[0]}")
            return result
        if problems:
            raise UserError(f"no usable checkpoint in {self.folder} ({'; '.join(problems)}); "
                            f"delete {self.folder} to start over")
        return None


def _remove(path, ignore_errors=False):
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)
    except OSError:
        if not ignore_errors:
            raise


def trim_csv(path, keep):
    """Keep only the rows of CSV file `path` for which `keep(row)` is true (rows logged after
    the checkpoint a run resumes from: they are logged again, so none appears twice)."""
    if not os.path.exists(path):
        return
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows, columns = list(reader), reader.fieldnames
    if not columns:
        return
    kept = [row for row in rows if keep(row)]
    if len(kept) == len(rows):
        return
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(kept)
    os.replace(tmp, path)


# -- preemption -----------------------------------------------------------------------------------
_stop = threading.Event()


def stop_requested():
    """Whether SIGTERM arrived while `stop_on_sigterm()` was active."""
    return _stop.is_set()


def _on_sigterm(signum, frame):
    if _stop.is_set():  # a second SIGTERM: do not wait for the step boundary
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
    _stop.set()


@contextlib.contextmanager
def stop_on_sigterm():
    """While active, SIGTERM asks the training loop to save and stop (see the module's doc).
    Only the main thread can handle signals: elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _stop.clear()
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _stop.clear()


def write_json_atomically(path, value):
    """Write `value` as JSON to `path` through a temporary file, so a reader never sees half of it."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)
    os.replace(tmp, path)
