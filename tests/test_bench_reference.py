"""The CleanRL reference of the DQN bench (bench/run.py case_cleanrl): the patched dqn_atari.py runs in
.venv-cleanrl/ under gymnasium 1.4 and ale-py 0.12 (offline ROMs) and its learning phase is timed.
Needs `make bench-reference` first (a network install); skipped without it."""

import os

import pytest

from bench import run


@pytest.mark.slow  # 800 Atari steps with 400 PyTorch updates: 10-60 s on 2 cores
@pytest.mark.skipif(not os.path.exists(run.CLEANRL_STAMP), reason="no .venv-cleanrl/: run `make bench-reference`")
def test_cleanrl_reference_runs_and_times_its_learning_phase():
    row = run.case_cleanrl(timeout=300)
    assert "error" not in row, row.get("error")
    assert isinstance(row["env_steps_per_s"], float) and row["env_steps_per_s"] > 0, row
    assert row["updates_per_s"] == row["env_steps_per_s"]  # one environment, one update per step
    assert row["note"].startswith("steps 500-700 (learning)"), row["note"]  # SPS lines at steps 500, 600, 700
    assert row["peak_rss_mb"] > 100  # the child's own rusage: PyTorch and the ALE loaded
