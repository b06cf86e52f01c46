"""Keep TensorFlow's start-up lines off a command-line user's terminal.

On a CPU-only machine, importing TensorFlow prints half a dozen lines
before any setting can stop them ("All log messages before
absl::InitializeLog() ...", "Could not find cuda drivers ...", "oneDNN
custom operations are on ..."): they are written by C++ code while the
shared libraries load, before TF_CPP_MIN_LOG_LEVEL is read. The first
device use then logs "failed call to cuInit ... CUDA error" at ERROR level.
A user who mistyped a path would see these seven lines above the one line
that matters.

`quiet_tensorflow_startup()` (called by `core.errors.run_cli`, so by every
CLI) defaults TF_CPP_MIN_LOG_LEVEL to 3 and, through an import hook, sends
the C-level stderr to a temporary file for the duration of the first
`import tensorflow`, whenever that happens; if the import fails, what it
printed is written out before the error propagates. The hook waits for the
import rather than importing TensorFlow itself so that `--help` and
argument errors stay fast. Library code (notebooks, tests) is untouched.
TF_CPP_MIN_LOG_LEVEL=0 (all of TensorFlow's logs) turns both off.
"""

import contextlib
import importlib.abc
import importlib.util
import os
import sys
import tempfile

TENSORFLOW = "tensorflow"


@contextlib.contextmanager
def _stderr_to_file():
    """Point file descriptor 2 (where C++ code writes) at a temporary file; yields it."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


class _QuietLoader(importlib.abc.Loader):
    """Runs the real loader of `tensorflow` with stderr captured."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        error = None
        with _stderr_to_file() as captured:
            try:
                self.loader.exec_module(module)
            except BaseException as caught:  # re-raised below, once stderr is back
                error = caught
                captured.seek(0)
                text = captured.read().decode(errors="replace")
        if error is not None:
            sys.stderr.write(text)
            raise error

    def __getattr__(self, name):  # resource readers and the like: the real loader's
        return getattr(self.loader, name)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Wraps the loader of the first `import tensorflow`, then steps aside."""

    def find_spec(self, name, path=None, target=None):
        if name != TENSORFLOW:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def quiet_tensorflow_startup():
    """Silence TensorFlow's start-up noise for the rest of this process (see the module docstring)."""
    level = os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if level == "0" or TENSORFLOW in sys.modules or any(isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietTensorFlowFinder())
