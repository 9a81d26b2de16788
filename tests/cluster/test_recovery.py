"""A trial's end lost with the cluster (state uploaded, result.json not yet) comes back from its final checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

from studies.runner.recovery import FINAL_FILE, recover_trial_ends, write_final


def _trial(experiment: Path, name: str, rows: list[dict], checkpoints: dict[str, dict | None]) -> Path:
    folder = experiment / name
    folder.mkdir(parents=True)
    (folder / "result.json").write_text("".join(json.dumps(row) + "\n" for row in rows))
    for checkpoint, final in checkpoints.items():
        (folder / checkpoint).mkdir()
        (folder / checkpoint / "state.pt").write_bytes(b"x")
        if final is not None:
            write_final(folder / checkpoint, final)
    return folder


def _rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "result.json").read_text().splitlines()]


def test_a_finished_trial_whose_stored_results_stop_short_gets_its_end_back(tmp_path: Path) -> None:
    final = {"stage": "done", "train_iteration": 40, "image_auroc": 0.875, "category": "tile"}
    cut = _trial(tmp_path, "dsr_trial_0", [{"stage": "stage2", "train_iteration": 20},
                                            {"stage": "stage3", "train_iteration": 30}],
                 {"checkpoint_000002": None, "checkpoint_000010": final})  # numbered, not sorted as text
    done = _trial(tmp_path, "dsr_trial_1", [{"stage": "stage3", "train_iteration": 30}, final],
                  {"checkpoint_000003": final})
    running = _trial(tmp_path, "dsr_trial_2", [{"stage": "stage2", "train_iteration": 20}],
                     {"checkpoint_000001": None})
    untouched = {folder: (folder / "result.json").read_bytes() for folder in (done, running)}

    assert recover_trial_ends(str(tmp_path)) == ["dsr_trial_0"]
    rows = _rows(cut)
    assert [r["stage"] for r in rows] == ["stage2", "stage3", "done"]
    assert rows[-1]["image_auroc"] == 0.875 and rows[-1]["checkpoint_dir_name"] == "checkpoint_000010"
    assert rows[-1]["recovered_from_checkpoint"] is True
    assert all((folder / "result.json").read_bytes() == text for folder, text in untouched.items())
    assert recover_trial_ends(str(tmp_path)) == []  # once recorded, never again


def test_a_result_file_cut_mid_line_or_missing_is_repaired_too(tmp_path: Path) -> None:
    final = {"stage": "done", "train_iteration": 40}
    cut = _trial(tmp_path, "a", [{"stage": "stage3", "train_iteration": 30}], {"checkpoint_000004": final})
    with open(cut / "result.json", "a") as stream:
        stream.write('{"stage": "do')  # an upload cut off inside a line
    lost = _trial(tmp_path, "b", [], {"checkpoint_000004": final})
    (lost / "result.json").unlink()
    assert sorted(recover_trial_ends(str(tmp_path))) == ["a", "b"]
    assert [r["stage"] for r in _rows(cut)] == ["stage3", "done"] and [r["stage"] for r in _rows(lost)] == ["done"]
    assert (tmp_path / "a" / "checkpoint_000004" / FINAL_FILE).is_file()


def test_an_experiment_without_trials_or_checkpoints_is_left_alone(tmp_path: Path) -> None:
    assert recover_trial_ends(str(tmp_path / "nothing")) == []
    (tmp_path / "stage1").mkdir()
    assert recover_trial_ends(str(tmp_path)) == []
