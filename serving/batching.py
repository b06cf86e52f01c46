"""Server-side batching, as TF Serving's `--enable_batching --batching_parameters_file=FILE` configures it.

Requests that reach the same signature of the same model version at about the same time are concatenated
along the batch dimension, run as one call, and the outputs split back to their requests. A batch closes
when it holds `max_batch_size` rows or `batch_timeout_micros` after its first request arrived; it is then
padded to the next of `allowed_batch_sizes` (when given) with copies of its last row, so the model sees a
few shapes only. `num_batch_threads` batches run at once; a request that finds `max_enqueued_batches`
full batches waiting is refused (UNAVAILABLE), and one larger than `max_batch_size` is invalid, as in TF
Serving (which splits it only with `enable_large_batch_splitting`, not offered here).

The parameters file is TF Serving's text format (BatchingParameters):

    max_batch_size { value: 32 }
    batch_timeout_micros { value: 2000 }
    num_batch_threads { value: 2 }
    max_enqueued_batches { value: 64 }
    allowed_batch_sizes: 8
    allowed_batch_sizes: 32

What batching changes in the answers: nothing in what a row means, but a row computed inside a batch of 16
goes through other CPU kernels (another GEMM blocking) than the same row alone, so its floats can differ
from the unbatched answer in the last bits (measured up to ~2e-5 in a softmax output of 10 classes), as in
TF Serving. A batch's answer is bit-identical to running the same stacked rows without the server.
"""

import dataclasses
import re
import threading
import time

import numpy as np

from serving.errors import ServingError, invalid


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
    max_batch_size: int = 32
    batch_timeout_micros: int = 2000
    num_batch_threads: int = 2
    max_enqueued_batches: int = 64
    allowed_batch_sizes: tuple = ()

    def __post_init__(self):
        for name in ("max_batch_size", "num_batch_threads", "max_enqueued_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.batch_timeout_micros < 0:
            raise ValueError(f"batch_timeout_micros must be at least 0, got {self.batch_timeout_micros}")
        sizes = self.allowed_batch_sizes
        if sizes and (list(sizes) != sorted(set(sizes)) or sizes[-1] != self.max_batch_size or sizes[0] < 1):
            raise ValueError(f"allowed_batch_sizes must increase and end at max_batch_size "
                             f"({self.max_batch_size}), got {list(sizes)}")


_WRAPPED = re.compile(r"^\s*(\w+)\s*\{\s*value\s*:\s*(-?\d+)\s*\}\s*$")
_REPEATED = re.compile(r"^\s*(allowed_batch_sizes)\s*:\s*(\d+)\s*$")


def parse_parameters(text):
    """BatchingParameters from TF Serving's text format; a ValueError names the line it cannot read."""
    fields, sizes = {}, []
    known = {f.name for f in dataclasses.fields(BatchingParameters)} - {"allowed_batch_sizes"}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0]
        if not line.strip():
            continue
        wrapped, repeated = _WRAPPED.match(line), _REPEATED.match(line)
        if wrapped and wrapped.group(1) in known:
            fields[wrapped.group(1)] = int(wrapped.group(2))
        elif repeated:
            sizes.append(int(repeated.group(2)))
        else:
            raise ValueError(f"line {number}: cannot read {line.strip()!r} (fields: {', '.join(sorted(known))} "
                             f"as `name {{ value: N }}`, and `allowed_batch_sizes: N`)")
    return BatchingParameters(**fields, allowed_batch_sizes=tuple(sizes))


def batchable(signature):
    """Every input and output has an unknown first dimension: the rows of several requests can be stacked."""
    return all(spec.shape is not None and spec.shape and spec.shape[0] is None
               for spec in (*signature.inputs.values(), *signature.outputs.values()))


class _Task:
    def __init__(self, inputs, rows):
        self.inputs, self.rows = inputs, rows
        self.done = threading.Event()
        self.outputs = self.error = None


class Batcher:
    """One queue per (model version, signature, inner shapes and dtypes): only requests that can be stacked
    share a batch. `run(key, call, inputs)` blocks until the request's rows are answered."""

    def __init__(self, parameters):
        self.parameters = parameters
        self._lock = threading.Condition()
        self._queues = {}  # key -> (call, [tasks])
        self._threads = [threading.Thread(target=self._work, daemon=True, name=f"batch-{i}")
                         for i in range(parameters.num_batch_threads)]
        self._stopped = False
        self.batches_run = 0
        for thread in self._threads:
            thread.start()

    def run(self, key, call, inputs):
        rows = len(next(iter(inputs.values())))
        p = self.parameters
        if rows > p.max_batch_size:
            raise invalid(f"Task size {rows} is larger than maximum input batch size {p.max_batch_size}")
        key = (key, tuple(sorted((k, v.dtype.str, v.shape[1:]) for k, v in inputs.items())))
        task = _Task(inputs, rows)
        with self._lock:
            if self._stopped:  # draining: answer alone rather than wait for a batch that no thread will run
                return call(inputs)
            _, tasks = self._queues.setdefault(key, (call, []))
            waiting = sum(t.rows for t in tasks)
            if waiting + rows > p.max_enqueued_batches * p.max_batch_size:
                raise ServingError("UNAVAILABLE", "The batch scheduling queue to which this task was submitted is full")
            tasks.append(task)
            task.arrived = time.monotonic()
            self._lock.notify_all()
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.outputs

    def stop(self):
        """The waiting batches run now, without their timeout; later requests run alone."""
        with self._lock:
            self._stopped = True
            self._lock.notify_all()

    def _next_batch(self):
        """Under the lock: the oldest queue's batch once it is full or its first task timed out, else None and
        how long to wait."""
        timeout = self.parameters.batch_timeout_micros / 1e6
        oldest, wait = None, None
        for key, (call, tasks) in self._queues.items():
            if not tasks:
                continue
            full = sum(t.rows for t in tasks) >= self.parameters.max_batch_size
            left = 0.0 if self._stopped else tasks[0].arrived + timeout - time.monotonic()
            if (full or left <= 0) and (oldest is None or tasks[0].arrived < oldest[2][0].arrived):
                oldest = (key, call, tasks)
            elif left > 0:
                wait = left if wait is None else min(wait, left)
        if oldest is None:
            return None, wait
        key, call, tasks = oldest
        batch, rows = [], 0
        while tasks and rows + tasks[0].rows <= self.parameters.max_batch_size:
            rows += tasks[0].rows
            batch.append(tasks.pop(0))
        if not tasks:
            del self._queues[key]
        return (call, batch), None

    def _work(self):
        while True:
            with self._lock:
                while True:
                    ready, wait = self._next_batch()
                    if ready is not None:
                        break
                    if self._stopped:
                        return
                    self._lock.wait(wait)
            self._run_batch(*ready)

    def _run_batch(self, call, batch):
        rows = sum(t.rows for t in batch)
        size = next((s for s in self.parameters.allowed_batch_sizes if s >= rows), rows)
        stacked = {}
        for name in batch[0].inputs:
            parts = [t.inputs[name] for t in batch]
            if size > rows:  # padded with copies of the last row: the model sees only the allowed sizes
                parts.append(np.repeat(parts[-1][-1:], size - rows, axis=0))
            stacked[name] = np.concatenate(parts)
        try:
            outputs = call(stacked)
            start = 0
            for task in batch:
                task.outputs = {k: v[start:start + task.rows] for k, v in outputs.items()}
                start += task.rows
        except Exception as error:  # every request of the batch gets the model's error
            for task in batch:
                task.error = error
        self.batches_run += 1
        for task in batch:
            task.done.set()
