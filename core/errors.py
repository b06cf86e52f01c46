"""One-line errors for people, instead of a wall of traceback.

Library code raises `UserError` for anything the user can fix (a wrong path,
an unknown model name, an image of the wrong size). The CLIs run their
commands through `run_cli`, which prints such an error as a single line
and exits with status 2. Programming errors still raise with a traceback.

A training run stopped by SIGTERM (a cluster scheduler's preemption, `docker
stop`) saves a checkpoint and raises `Preempted`: `run_cli` prints its one
line and exits with status 143 (128 + SIGTERM, what a shell reports for a
process killed by SIGTERM), so a scheduler sees an unfinished job, not a
success, and reruns it; the rerun resumes from that checkpoint.
"""

import os
import sys

EXIT_PREEMPTED = 143


def first_line(error):
    """The first line of an exception's message (or its type's name), at most 200 characters:
    what a one-line error quotes of a library's multi-line message."""
    lines = str(error).strip().splitlines()
    return lines[0][:200] if lines else type(error).__name__


class UserError(Exception):
    """An error caused by the user's input, printed as one line by the CLI."""


class Preempted(Exception):
    """Training stopped on SIGTERM after saving a checkpoint; rerunning the same command resumes."""


def run_cli(main, argv=None, prog="suite"):
    """Call `main(argv)` and turn a `UserError` into `prog: error: ...`.

    TensorFlow's start-up lines are kept off the terminal (core/quiet.py).
    """
    from core.quiet import quiet_tensorflow_startup

    quiet_tensorflow_startup()
    os.environ.setdefault("MPLBACKEND", "Agg")  # the CLIs write PNG files; a notebook keeps its own backend
    try:
        return main(argv)
    except UserError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        sys.exit(2)
    except Preempted as stop:
        print(f"{prog}: {stop}", file=sys.stderr)
        sys.exit(EXIT_PREEMPTED)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
