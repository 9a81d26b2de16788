"""provenance.json: the first start writes it, every --resume adds a run; the report reads it back."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from reports.provenance import read_provenance
from studies.runner.provenance import PROVENANCE_FILE, record_run


def test_every_start_is_a_run_of_the_same_document(tmp_path: Path) -> None:
    experiment = str(tmp_path / "results" / "ablation")
    first = record_run(experiment, argparse.Namespace(preset="tiny", resume=False), ["--preset", "tiny"],
                       "ablation", {"CPU": 2.0})
    second = record_run(experiment, argparse.Namespace(preset="tiny", resume=True), ["--preset", "tiny", "--resume"],
                        "ablation", {"CPU": 4.0, "GPU": 1.0})
    saved = json.loads((Path(experiment) / PROVENANCE_FILE).read_text())
    assert saved == second == read_provenance(experiment)
    assert saved["command"] == first["command"] == ["studies/ablation.py", "--preset", "tiny"]
    assert saved["preset"] == "tiny" and saved["study"] == "ablation"
    assert [run["resumed"] for run in saved["runs"]] == [False, True]
    assert saved["runs"][1]["cluster_resources"] == {"CPU": 4.0, "GPU": 1.0}
    assert saved["runs"][0]["started"] <= saved["runs"][1]["started"]
    assert saved["libraries"]["torch"] and saved["driver"]["cpu_model"]
