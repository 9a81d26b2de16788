"""python -m reports: writes the report and prints its path; a bad folder gives one error line and exit code 2."""

from __future__ import annotations

import subprocess
import sys

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
