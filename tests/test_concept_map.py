"""docs/concepts.md cannot drift from the code: every test it names exists, and every command's app, verb and
flags are accepted by that app's command line (its --help, parsed in-process: no TensorFlow is imported)."""

import ast
import contextlib
import functools
import importlib
import io
import os
import re
import shlex

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROW = re.compile(r"^\| (?P<concept>[^|]+) \| `(?P<command>[^`]+)` \| `(?P<test>[^`]+)` \|$")


def rows():
    with open(os.path.join(ROOT, "docs", "concepts.md"), encoding="utf-8") as f:
        return [m.groupdict() for line in f if (m := ROW.match(line.rstrip("\n")))]


def test_the_map_has_rows_for_every_part_of_the_notes():
    found = rows()
    assert len(found) >= 60
    with open(os.path.join(ROOT, "docs", "concepts.md"), encoding="utf-8") as f:
        table_lines = [line for line in f if line.startswith("| ") and not line.startswith("| concept")]
    assert len(table_lines) == len(found), "a table row does not follow `| concept | `command` | `test` |`"


@functools.cache
def _test_names(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}


def test_every_named_test_exists():
    missing = []
    for row in rows():
        path, _, name = row["test"].partition("::")
        if not os.path.isfile(os.path.join(ROOT, path)) or name not in _test_names(path):
            missing.append(f"{row['concept']}: {row['test']}")
    assert not missing, missing


def _help_text(module, words):
    """The --help of `python -m <module> <words>`; None when the command line refuses the words."""
    main = importlib.import_module(f"{module}.__main__").main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as stop:
        main([*words, "--help"])
    return out.getvalue() if stop.value.code == 0 else None


def test_every_command_names_a_real_verb_and_real_flags():
    problems = []
    for row in rows():
        words = shlex.split(row["command"])
        assert words[:2] == ["python", "-m"], row["command"]
        module, arguments = words[2], words[3:]
        verbs = []
        for word in arguments:
            if word.startswith("-"):
                break
            verbs.append(word)
        while verbs and (help_text := _help_text(module, verbs)) is None:
            verbs.pop()  # a positional argument after the verb (a prompt, a file)
        if not verbs:
            problems.append(f"{row['command']}: no verb accepted")
            continue
        for flag in (w.split("=")[0] for w in arguments if w.startswith("--") and w != "--help"):
            if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text):
                problems.append(f"{row['command']}: {flag} is not a flag of `{module} {' '.join(verbs)}`")
    assert not problems, problems
