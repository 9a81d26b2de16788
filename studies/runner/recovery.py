"""A trial's end survives losing the whole cluster: it is kept in the trial's final checkpoint, and a resumed study
writes it back into the trial's result.json where the loss cut it off.

Why: the driver uploads the experiment to storage file by file, the experiment state first and the trials'
result.json files after it (Tune's periodic sync). A cluster lost between the two leaves a stored state newer than
the stored results: a trial the state records as finished (TERMINATED, or holding its final checkpoint) whose
result.json lacks its last rows, "done" among them. Resumed, Tune does not run a finished trial again, and a trial
restored from its final checkpoint has nothing left to do, so that trial's end would be lost for good.

The final checkpoint, by contrast, is uploaded by the trial itself before its result reaches the driver. So the
trainable writes its final result into it (`write_final`), and `recover_trial_ends`, run before Tune restores the
experiment, appends that result to every stored result.json that does not end with it.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import pyarrow.fs as pafs

from studies.runner.storage import storage_filesystem

FINAL_FILE = "final_result.json"  # in a trial's last checkpoint: the result it reported with it
RESULT_FILE = "result.json"  # Tune's per-trial results, one JSON object a line
_CHECKPOINT = re.compile(r"^checkpoint_(\d+)$")


def write_final(folder: str | os.PathLike[str], metrics: dict[str, Any]) -> None:
    """Put the trial's final result into the checkpoint folder it is reported with (see the module)."""
    with open(os.path.join(folder, FINAL_FILE), "w") as stream:
        json.dump(metrics, stream, default=str)


def recover_trial_ends(experiment_dir: str) -> list[str]:
    """Append its final result to every trial result.json under `experiment_dir` (a path or URI) whose last row
    is not that trial's end while the trial's latest checkpoint holds it; returns the trial folders repaired.
    Trials that never reached their end, and those whose result.json already ends with it, are left alone."""
    filesystem, root = storage_filesystem(experiment_dir)
    root = root.rstrip("/")
    listing = filesystem.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    repaired = []
    for trial in (entry for entry in listing if entry.type == pafs.FileType.Directory):
        final = _latest_final(filesystem, trial.path)
        if final is None:
            continue
        result_path = f"{trial.path}/{RESULT_FILE}"
        rows = _read_rows(filesystem, result_path)
        if rows and rows[-1].get("stage") == final.get("stage"):  # its end is recorded
            continue
        text = "".join(json.dumps(row, default=str) + "\n" for row in [*rows, final])
        with filesystem.open_output_stream(result_path) as stream:
            stream.write(text.encode())
        repaired.append(trial.base_name)
    return repaired


def _latest_final(filesystem: pafs.FileSystem, trial_dir: str) -> dict[str, Any] | None:
    """The final result in the trial's highest-numbered checkpoint, or None when that checkpoint has none."""
    entries = filesystem.get_file_info(pafs.FileSelector(trial_dir, allow_not_found=True))
    numbered = [(int(m.group(1)), e.path) for e in entries
                if e.type == pafs.FileType.Directory and (m := _CHECKPOINT.match(e.base_name))]
    if not numbered:
        return None
    path = f"{max(numbered)[1]}/{FINAL_FILE}"
    if filesystem.get_file_info(path).type != pafs.FileType.File:
        return None
    with filesystem.open_input_stream(path) as stream:
        final = json.loads(stream.read().decode())
    return {**final, "checkpoint_dir_name": max(numbered)[1].rsplit("/", 1)[-1], "recovered_from_checkpoint": True}


def _read_rows(filesystem: pafs.FileSystem, path: str) -> list[dict[str, Any]]:
    """The rows of a result.json (a cut-off last line is dropped); [] when there is none."""
    if filesystem.get_file_info(path).type != pafs.FileType.File:
        return []
    with filesystem.open_input_stream(path) as stream:
        lines = stream.read().decode(errors="replace").splitlines()
    rows = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


__all__ = ["FINAL_FILE", "write_final", "recover_trial_ends"]
