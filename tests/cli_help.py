"""The --help of an app's command line, parsed in-process (no TensorFlow is imported): for the tests that check
commands written in the docs and the app contract."""

import contextlib
import importlib
import io
import re

import pytest


def help_text(module, words):
    """The --help of `python -m <module> <words>`; None when the command line refuses the words."""
    main = importlib.import_module(f"{module}.__main__").main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as stop:
        main([*words, "--help"])
    return out.getvalue() if stop.value.code == 0 else None


def check_command(words):
    """Problems of `python -m MODULE ARGS...` given as words [MODULE, *ARGS]: the verbs must be accepted (words
    before the first flag, less trailing positionals such as file names) and every --flag must be in that verb's
    help (read with the command's --task, which decides a task app's flags)."""
    module, arguments = words[0], words[1:]
    verbs = []
    for word in arguments:
        if word.startswith("-"):
            break
        verbs.append(word)
    task = arguments[arguments.index("--task"):arguments.index("--task") + 2] if "--task" in arguments else []
    text = None
    while verbs and (text := help_text(module, verbs + task)) is None:
        verbs.pop()  # a positional argument after the verb (a prompt, a file)
    if not verbs:
        return [f"{' '.join(words)}: no verb accepted"]
    return [f"{' '.join(words)}: {flag} is not a flag of `{module} {' '.join(verbs)}`"
            for flag in (w.split("=")[0] for w in arguments if w.startswith("--") and w != "--help")
            if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text)]


def flat_help(module, words):
    """The --help of `python -m <module> <words>` on one line (argparse wraps it at the terminal width)."""
    text = help_text(module, words)
    assert text is not None, f"{module} {' '.join(words)} --help is refused"
    return " ".join(text.split())


def verb_help_problems(module, own):
    """Each verb's help must show its `own` words (flags, defaults), no --out, and, unless it trains, no
    training flags: the contract's "each verb's --help lists its own flags, with defaults"."""
    problems = []
    for verb, expected in own.items():
        text = flat_help(module, [verb])
        problems += [f"{verb}: {word!r} missing" for word in expected if word not in text]
        shown = set(re.findall(r"(?<![\w-])(--[a-z][\w-]*)", text))
        problems += [f"{verb}: {flag} shown" for flag in ["--out"] + (verb != "train") * ["--epochs", "--strategy",
                                                                                        "--config"] if flag in shown]
    return problems
