"""Generated tables in docs/: text between two marker lines is rewritten, every other byte kept.

Shared by bench/run.py (docs/bench.md) and bench/serving_load.py --chaos (docs/deployment.md).
Files are written whole: to a temporary file beside them, then renamed into place.
"""

import os


def write_atomic(path, text):
    """Write `text` to `path` via a temporary file in the same folder and os.replace."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w", newline="") as f:
            f.write(text)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def replace_between_markers(text, begin, end, body):
    """`text` with what lies between `begin` and `end` replaced by "\\n" + body + "\\n"."""
    if begin not in text or end not in text.split(begin, 1)[1]:
        raise ValueError(f"markers {begin!r} ... {end!r} not found")
    before, rest = text.split(begin, 1)
    after = rest.split(end, 1)[1]
    return f"{before}{begin}\n{body}\n{end}{after}"


def write_between_markers(path, begin, end, body, fallback=None):
    """Rewrite the text between the markers in the file at `path`; the rest stays byte-identical.

    Without `fallback`, a missing file or missing markers is an error. With it, a missing file
    starts as `fallback`, and markers are appended to a file that lacks them."""
    if os.path.exists(path):
        with open(path, newline="") as f:
            text = f.read()
    elif fallback is None:
        raise FileNotFoundError(path)
    else:
        text = fallback
    if fallback is not None and (begin not in text or end not in text.split(begin, 1)[1]):
        text += f"\n{begin}\n{end}\n"
    write_atomic(path, replace_between_markers(text, begin, end, body))
