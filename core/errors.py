"""One-line errors for people, instead of a wall of traceback.

Library code raises `UserError` for anything the user can fix (a wrong path,
an unknown model name, an image of the wrong size). The CLIs run their
commands through `run_cli`, which prints such an error as a single line
and exits with status 2. Programming errors still raise with a traceback.
"""

import sys


class UserError(Exception):
    """An error caused by the user's input, printed as one line by the CLI."""


def run_cli(main, argv=None, prog="suite"):
    """Call `main(argv)` and turn a `UserError` into `prog: error: ...`."""
    try:
        return main(argv)
    except UserError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
