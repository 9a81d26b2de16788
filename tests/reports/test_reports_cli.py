"""python -m reports: writes the report and prints its path; a bad folder gives one error line and exit code 2."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from reports.__main__ import main


def test_cli_writes_report(experiments, tmp_path, capsys):
    assert main([str(experiments["partial"].path), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == str(tmp_path / "out" / "report.md") and (tmp_path / "out" / "report.md").is_file()


def test_cli_default_out_is_inside_results_dir(experiments, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(experiments["partial"].path, copy / "partial")
    assert main([str(copy)]) == 0
    assert (copy / "report" / "report.md").is_file()
    assert main([str(copy)]) == 0  # rerunning beside its own output still finds only the experiment


def test_cli_on_an_empty_folder_prints_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "reports", str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("reports: error: no Ray Tune experiment")


@pytest.mark.slow  # an S3 server and a report subprocess: about 25 s
def test_cli_reads_an_experiment_in_s3_and_writes_the_report_beside_it(experiments, tmp_path):
    """python -m reports s3://...: the same report as from the folder (models are not fetched), put back in S3."""
    from s3_server import s3_server

    local = main([str(experiments["partial"].path), "--out", str(tmp_path / "local")])
    assert local == 0
    with s3_server() as s3:
        s3.create_bucket("dsr-reports")
        uploaded = s3.upload_folder(experiments["partial"].path, "dsr-reports", "runs/partial")
        assert uploaded > 0
        done = subprocess.run([sys.executable, "-m", "reports", "s3://dsr-reports/runs/partial"],
                              capture_output=True, text=True, timeout=180, env={**os.environ, **s3.env})
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.strip() == "s3://dsr-reports/runs/partial/report/report.md"
        keys = s3.keys("dsr-reports", "runs/partial/report/")
        assert "runs/partial/report/report.md" in keys and "runs/partial/report/trials.csv" in keys
        body = s3.client().get_object(Bucket="dsr-reports", Key="runs/partial/report/trials.csv")["Body"].read()
        # the same trials and numbers as the report built from the folder: every cell equal but the trial paths
        from_s3 = pd.read_csv(io.BytesIO(body))
        from_folder = pd.read_csv(tmp_path / "local" / "trials.csv")
        assert len(from_folder) > 0 and "path" in from_folder.columns
        assert_frame_equal(from_s3.drop(columns="path"), from_folder.drop(columns="path"))
        assert [Path(p).name for p in from_s3["path"]] == [Path(p).name for p in from_folder["path"]]
        missing = subprocess.run([sys.executable, "-m", "reports", "s3://dsr-reports/nothing-here"],
                                 capture_output=True, text=True, timeout=120, env={**os.environ, **s3.env})
        assert missing.returncode == 2 and "does not exist" in missing.stderr.strip().splitlines()[-1]
