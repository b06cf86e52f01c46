"""`make results` (bench/headlines.py): a row whose record carries the current fingerprint is reused without
training; the table is generated from the records (no figure typed), and leads with each row's headline."""

import json
import os

from bench import headlines


def record(row, fingerprint, **metrics):
    return {"row": row.name, "app": row.app, "model": "unet", "fingerprint": fingerprint, "headline": row.headline,
            "metrics": metrics, "baselines": {"all_background_mean_iou": 0.072},
            "budget": {"epochs": 4, "limit": 8000, "training_seconds": 336.0},
            "environment": {"cpu_model": "AMD EPYC", "cores": 2, "git_commit": "0123456789abcdef"}}


def test_a_current_record_is_reused_and_the_table_comes_from_the_records(tmp_path):
    row = headlines.Row("segment_unet", "segment", ("--model", "unet"), ("--epochs", "1"), "mean_iou")
    assert row.fingerprint() != row.fingerprint(quick=True)  # the quick budget is another measurement
    assert row.fingerprint() == row.fingerprint()
    (tmp_path / "segment_unet.json").write_text(json.dumps(record(row, row.fingerprint(), mean_iou=0.66,
                                                                  pixel_accuracy=0.95)))
    lines = []
    got, reused = headlines.run_row(row, runs=str(tmp_path / "runs"), records=str(tmp_path), log=lines.append)
    assert reused and got["metrics"]["mean_iou"] == 0.66 and "reused" in lines[0]
    assert not (tmp_path / "runs").exists()  # nothing was trained

    table = headlines.table([got]).splitlines()
    assert table[0].startswith("| row | headline |") and len(table) == 3
    assert "mean_iou **0.66**" in table[2] and "pixel_accuracy 0.95" in table[2]
    assert "all_background_mean_iou 0.072" in table[2] and "5.6 min" in table[2] and "AMD EPYC, 2 cores" in table[2]
    # a record of code that has changed since says so until `make results` reruns it
    assert table[2].endswith("| same |")
    stale = headlines.table([record(row, "0" * 16, mean_iou=0.5)]).splitlines()[2]
    assert stale.endswith("| changed: rerun |")


def test_the_from_scratch_wall_time_is_the_sum_of_the_rows():
    row = headlines.ROWS[0]
    records = [dict(record(row, "0"), wall_seconds=seconds) for seconds in (3000.0, 2400.0, 1260.0)]
    assert "**1 h 51 min** for 3 rows," in headlines.from_scratch(records)   # 6,660 s = 111 min
    line = headlines.from_scratch(records + [record(row, "0")])
    assert "**1 h 51 min** for 3 rows (1 without a recorded wall time)" in line


def test_a_row_resumes_only_a_run_folder_of_its_own_fingerprint(tmp_path):
    run_dir = tmp_path / "caption"
    run_dir.mkdir()
    (run_dir / "training_time.json").write_text('{"seconds": 216.0}')  # a finished run of older code
    assert headlines.prepare_run_dir(str(run_dir), "aaaa") is True
    assert os.listdir(run_dir) == [headlines.FINGERPRINT_FILE]  # its clock and checkpoints are gone
    (run_dir / "backup").mkdir()  # killed mid-run: the same fingerprint resumes it
    assert headlines.prepare_run_dir(str(run_dir), "aaaa") is False and (run_dir / "backup").is_dir()
    assert headlines.prepare_run_dir(str(run_dir), "bbbb") is True and not (run_dir / "backup").exists()
    assert headlines.prepare_run_dir(str(tmp_path / "new"), "cccc") is False
    assert (tmp_path / "new" / headlines.FINGERPRINT_FILE).read_text().strip() == "cccc"


def test_every_row_runs_an_app_that_exists_with_its_contract_verbs():
    from cli_help import check_command

    for row in headlines.ROWS:
        for command in row.commands("runs/results/x", quick=True):
            assert not check_command(command[2:]), (row.name, command)
