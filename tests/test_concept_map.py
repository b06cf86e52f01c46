"""docs/concepts.md cannot drift from the code: every test it names exists, and every command's app, verb and
flags are accepted by that app's command line (its --help, parsed in-process: no TensorFlow is imported)."""

import ast
import functools
import os
import re
import shlex

from cli_help import check_command

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


def test_every_command_names_a_real_verb_and_real_flags():
    problems = []
    for row in rows():
        words = shlex.split(row["command"])
        assert words[:2] == ["python", "-m"], row["command"]
        problems += check_command(words[2:])
    assert not problems, problems
