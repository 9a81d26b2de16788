"""A study whose trials ask for a resource the cluster never provides (a GPU on a Ray without one) stops after
--placement-timeout with one line naming the resource, instead of waiting for ever."""

from __future__ import annotations

from pathlib import Path

import pytest
from study_run import error_lines


@pytest.mark.slow
def test_a_study_asking_for_a_gpu_that_never_appears_stops_in_one_line(start_study, tmp_path: Path) -> None:
    run = start_study("ablation", ["--preset", "tiny", "--variants", "DSR", "--categories", "brick",
                                   "--storage", str(tmp_path / "storage"), "--no-report", "--gpus-per-trial", "1",
                                   "--placement-timeout", "0.1"])  # 6 s
    code = run.wait(timeout=300)
    errors = error_lines(run.stderr)
    assert code == 2, run.output_tail()
    assert len(errors) == 1 and "trials cannot be placed" in errors[0], run.output_tail()
    assert "GPU 1" in errors[0] and "at most GPU 0" in errors[0] and "autoscaler's last error" in errors[0]
