"""The visualize command line on the app contract: methods are the verbs, --run names the classify run to
explain (default runs/classify/<DEFAULT_MODEL>), --figures the PNG folder (default <run>/visualize/), --seed
an integer >= 0, and no --out."""

import os

import pytest

from apps.visualize.__main__ import main, parse_args
from core.errors import run_cli
from tests.test_visualize_support import classify_run


def help_of(argv, capsys):
    with pytest.raises(SystemExit):
        parse_args(argv + ["--help"])
    return " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("method, own, foreign", [
    ("kernels", [], ["--count", "--layer", "--to"]),
    ("occlusion", ["--patch", "--stride", "--class"], ["--to", "--perplexity"]),
    ("tsne", ["--perplexity", "--count"], ["--patch", "--to"]),
    ("adversarial-train", ["--to", "--share", "(default: the standard run's)"], ["--perplexity", "--patch"]),
])
def test_each_method_help_shows_run_figures_seed_with_defaults_and_only_its_flags(method, own, foreign, capsys):
    from apps.classify.budgets import DEFAULT_MODEL

    text = help_of([method], capsys)
    for flag in [f"(default: runs/classify/{DEFAULT_MODEL})", "--figures DIR", "(default: RUN/visualize)",
                 "--seed", *own]:
        assert flag in text, (flag, text)
    for flag in ["--out", "--strategy", *foreign]:
        assert flag not in text, (flag, text)


def test_a_negative_seed_is_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, ["saliency", "--seed", "-1"], prog="apps.visualize")
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and err == ["apps.visualize: error: --seed must be an integer >= 0, got -1"]


def test_pngs_go_into_the_run_folder_by_default(capsys):
    run = classify_run()
    main(["kernels", "--run", run])
    png = os.path.join(run, "visualize", "kernels_c1.png")
    assert f"wrote {png}" in capsys.readouterr().out and os.path.getsize(png) > 8_000
