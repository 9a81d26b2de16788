"""--resume never silently runs old options: what Tune can take on is applied, anything else is refused, listed."""

from __future__ import annotations

import json

import pytest
from study_run import error_lines

pytestmark = pytest.mark.slow  # real study processes


def test_resume_refuses_changed_options_and_accepts_resources(start_study, tmp_path) -> None:
    storage = tmp_path / "storage"
    common = ["--preset", "tiny", "--storage", str(storage), "--no-report", "--set", "stage1_iterations=2"]
    first = start_study("ablation", [*common, "--variants", "DSR"])
    assert first.wait(timeout=180) == 0, first.output_tail()
    saved = json.loads((storage / "ablation" / "study_options.json").read_text())
    assert saved["variants"] == ["DSR"] and "storage" not in saved

    changed = start_study("ablation", [*common, "--variants", "DSR", "DSR_img", "--max-failures", "5", "--resume"])
    assert changed.wait(timeout=60) == 2, changed.output_tail()
    (line,) = error_lines(changed.stderr)
    assert "--variants: saved ['DSR'], now ['DSR', 'DSR_img']" in line and "--max-failures: saved 3, now 5" in line
    assert "Trial status" not in changed.stdout

    resources = start_study("ablation", [*common, "--variants", "DSR", "--cpus-per-trial", "2", "--checkpoint-minutes",
                                         "5", "--resume"])
    assert resources.wait(timeout=180) == 0, resources.output_tail()
    assert error_lines(resources.stderr) == []
