"""benchmarks/stage1_cpus.py in a tiny size: every mode is measured in its own processes and compared."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import stage1_cpus  # noqa: E402


@pytest.mark.slow
def test_threads_and_processes_are_timed_side_by_side(tmp_path, capsys):
    out = tmp_path / "stage1_cpus.json"
    result = stage1_cpus.main(["--preset", "tiny", "--cpus", "2", "--steps", "2", "--warmup", "1", "--rounds", "1",
                               "--output", str(out)])
    text = capsys.readouterr().out
    assert "GFLOP/s on 1 thread(s)" in text and "speed-up vs threads=1" in text
    for mode in ("threads=1", "threads=2", "processes=2"):
        assert mode in text
    saved = json.loads(out.read_text())
    assert saved["seconds_per_step"] == result["seconds_per_step"]
    assert all(len(v) == 1 and v[0] > 0 for v in saved["seconds_per_step"].values())
    assert all(value > 0 for value in saved["gflops"].values())
