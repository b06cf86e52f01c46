"""core.cli: flags generated from a config dataclass; defaults < --config file < typed flags; bad values in a
file or on the command line are one-line errors."""

import argparse
import contextlib
import io
import json
from dataclasses import dataclass

import pytest

from core.cli import add_config_flags, add_run_flags, config_dict, option, resolve_config, run_folder
from core.errors import UserError


@dataclass
class Config:
    model: str = option("unet", "architecture", choices=("fcn", "unet"))
    epochs: int = option(4, "passes over the data", minimum=1)
    learning_rate: float = option(1e-3, "Adam's rate")
    flip: bool = option(True, "random flips")
    limit: int | None = option(None, "at most this many examples")
    widths: tuple[int, ...] = option((16, 32), "channels per stage")


def parse(argv):
    parser = argparse.ArgumentParser(prog="x")
    add_config_flags(parser, Config)
    add_run_flags(parser, app="segment")
    return parser, parser.parse_args(argv)


def test_defaults_file_and_flags_in_that_order(tmp_path):
    _, args = parse([])
    assert resolve_config(Config, args) == Config()
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"epochs": 9, "learning_rate": 1, "widths": [8, 8, 8], "_input_shape": [96, 96, 1]}))
    _, args = parse(["--config", str(path), "--no-flip", "--epochs", "2"])
    config = resolve_config(Config, args)
    # the file replaces the defaults, the typed flags replace the file, a flag not typed leaves the file's value
    assert config == Config(epochs=2, learning_rate=1.0, flip=False, widths=(8, 8, 8))
    assert config_dict(config)["widths"] == [8, 8, 8]
    _, args = parse(["--widths", "4", "6", "--limit", "50", "--model", "fcn"])
    assert resolve_config(Config, args) == Config(widths=(4, 6), limit=50, model="fcn")


def test_a_run_reruns_from_its_own_config(tmp_path):
    _, args = parse(["--epochs", "3", "--no-flip"])
    first = resolve_config(Config, args)
    (tmp_path / "config.json").write_text(json.dumps(config_dict(first)))
    _, again = parse(["--config", str(tmp_path / "config.json")])
    assert resolve_config(Config, again) == first


@pytest.mark.parametrize("content, message", [
    ({"epochs": 0}, "--epochs must be at least 1, got 0"),
    ({"epochs": "3"}, "--epochs must be int, got '3'"),
    ({"epochs": True}, "--epochs must be int, got True"),
    ({"model": "vgg"}, "--model must be one of fcn, unet, got 'vgg'"),
    ({"widths": 3}, "--widths must be a list"),
    ({"epoch": 3}, "settings this command does not know: epoch"),
])
def test_bad_config_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(content))
    _, args = parse(["--config", str(path)])
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_config(Config, args)


def test_help_shows_every_default_and_bad_flags_exit_2():
    parser, _ = parse([])
    text = parser.format_help()
    for expected in ("--epochs", "(default: 4)", "--flip, --no-flip", "(default: 16 32)", "fcn, unet (default: unet)",
                     "--run DIR", "(default: runs/segment/<model>)", "--strategy S"):
        assert expected in " ".join(text.split()), expected
    for argv in (["--epochs", "x"], ["--model", "vgg"], ["--strategy", "tpu"]):
        with contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit) as stop:
            parser.parse_args(argv)
        assert stop.value.code == 2
    _, args = parse(["--epochs", "0"])
    with pytest.raises(UserError, match="--epochs must be at least 1"):
        resolve_config(Config, args)


def test_run_folder_is_one_per_model():
    assert run_folder("segment", "unet") == "runs/segment/unet"
    assert run_folder("segment", "unet", "elsewhere") == "elsewhere"


def test_a_runs_own_config_json_skips_what_the_run_recorded_but_a_hand_written_file_may_not(tmp_path):
    from core.cli import RUN_MARKER, run_config

    written = run_config(Config(epochs=7), "demo", image_shape=[28, 28, 1])
    assert written[RUN_MARKER] == "demo" and written["image_shape"] == [28, 28, 1]
    run_file = tmp_path / "config.json"
    run_file.write_text(json.dumps(written))
    assert resolve_config(Config, parse(["--config", str(run_file)])[1]).epochs == 7

    hand_written = tmp_path / "mine.json"
    hand_written.write_text(json.dumps({"epochs": 7, "image_shape": [28, 28, 1]}))
    with pytest.raises(UserError, match="image_shape"):
        resolve_config(Config, parse(["--config", str(hand_written)])[1])
