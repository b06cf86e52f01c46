"""A CLI error is one line: TensorFlow's start-up lines stay off the terminal (core/quiet.py)."""

import os
import subprocess
import sys

import pytest

from conftest import ROOT


def _cli(args, **env):
    """Run a CLI the way a user's shell does: no TF_CPP_MIN_LOG_LEVEL of ours."""
    full_env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    full_env.update({"PYTHONPATH": ROOT, **env})
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("onednn", ["0", "1"])
def test_an_error_after_tensorflow_started_is_the_only_line(tmp_path, onednn):
    # A run folder whose model file is not a model: `evaluate` imports Keras
    # (and so TensorFlow, which prints its start-up lines on import) before
    # it can find out.
    (tmp_path / "config.json").write_text('{"model": "lenet5", "dataset": "digits"}')
    (tmp_path / "model.keras").write_text("not a zip file")
    result = _cli(["-m", "apps.classify", "evaluate", "--run", str(tmp_path)], TF_ENABLE_ONEDNN_OPTS=onednn)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [result.stderr.strip()], result.stderr
    assert result.stderr.startswith("apps.classify: error: cannot load "), result.stderr


def test_tensorflow_logs_come_back_when_asked_for_and_a_failed_import_still_shows_its_output(tmp_path):
    # TF_CPP_MIN_LOG_LEVEL=0 is the user's way back to TensorFlow's own lines.
    program = ("from core.errors import run_cli\n"
               "def main(argv):\n"
               "    import tensorflow as tf\n"
               "    tf.reduce_sum(tf.ones(3)).numpy()\n"
               "run_cli(main, prog='probe')\n")
    loud = _cli(["-c", program], TF_CPP_MIN_LOG_LEVEL="0")
    quiet = _cli(["-c", program])
    assert loud.returncode == quiet.returncode == 0, loud.stderr + quiet.stderr
    assert quiet.stderr == ""
    # The lines that the quiet start hides are still there for who asks.
    assert "All log messages before absl::InitializeLog()" in loud.stderr or "cuda" in loud.stderr.lower(), \
        loud.stderr

    # What a failing import printed is not swallowed: a stand-in `tensorflow`
    # package that writes a line and raises.
    fake = tmp_path / "tensorflow"
    fake.mkdir()
    (fake / "__init__.py").write_text("import sys\nsys.stderr.write('the real reason\\n')\nraise ImportError('boom')\n")
    failed = _cli(["-c", program], PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
    assert failed.returncode == 1
    assert failed.stderr.startswith("the real reason\n") and "ImportError: boom" in failed.stderr


def test_importing_the_plots_keeps_the_callers_matplotlib_backend():
    """A notebook that chose its backend keeps it after `import core.plots`; the CLIs write PNGs with Agg."""
    code = ("import matplotlib; matplotlib.use('svg'); import core.plots; "
            "print(matplotlib.get_backend())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT,
                            env={k: v for k, v in os.environ.items() if k != "MPLBACKEND"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "svg"
