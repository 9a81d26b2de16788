"""Stage 1 as its own phase, seen from the study's command line: a failed stage 1 fails the trials that need it at
once, with its error; an interrupted stage 1 resumes from its checkpoint; --stage1-checkpoint skips the phase."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from study_run import is_done, read_results, wait_until

from dsr.config import preset
from dsr.model import DSR

pytestmark = pytest.mark.slow  # real study processes

STAGE1_ITERATIONS = 120
CHECKPOINT_EVERY = 20
REPORT_EVERY = 10


def test_a_failed_stage1_fails_its_trials_fast_with_its_error(start_study, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(photos / "good.png")
    (photos / "cut.png").write_bytes((photos / "good.png").read_bytes()[:50])  # a PNG cut off after its header
    storage = tmp_path / "storage"
    run = start_study("ablation", ["--preset", "tiny", "--variants", "DSR", "DSR_U-", "--storage", str(storage),
                                   "--stage1-data", str(photos), "--max-failures", "0", "--no-report"])
    assert run.wait(timeout=120) == 1, run.output_tail()
    experiment = storage / "ablation"
    (failed,) = [line for line in run.stdout.splitlines() if line.startswith("stage 1 ") and "failed:" in line]
    assert "cut.png" in failed
    key = failed.split()[2]
    assert "cut.png" in (experiment / "stage1" / key / "error.txt").read_text()
    assert not (experiment / "stage1" / key / "latent.pt").exists()
    errors = [line for line in run.stdout.splitlines() if line.startswith("trial error:")]
    assert len(errors) == 2 and all(f"stage 1 {key} failed" in line and "cut.png" in line for line in errors)
    for rows in read_results(experiment).values():  # the main trials never trained anything
        assert not [r for r in rows if r.get("stage_iteration")]


def _stage1_checkpointed(phase: Path) -> dict | None:
    for rows in read_results(phase).values():
        saved = [r for r in rows if r.get("checkpoint_dir_name")]
        if len(saved) >= 2:
            return rows[-1]
    return None


def test_an_interrupted_stage1_resumes_from_its_checkpoint(start_study, tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    args = ["--preset", "tiny", "--variants", "DSR_U-", "--storage", str(storage), "--set",
            f"stage1_iterations={STAGE1_ITERATIONS}", "--checkpoint-every", str(CHECKPOINT_EVERY), "--report-every",
            str(REPORT_EVERY), "--no-report"]
    phase = storage / "ablation" / "stage1"
    first = start_study("ablation", args)
    wait_until(lambda: _stage1_checkpointed(phase), 120, first, "two stage-1 checkpoints")
    first.kill_driver_group()
    first.kill_survivors()
    (before,) = read_results(phase).values()
    assert not is_done(before)

    second = start_study("ablation", [*args, "--resume"])
    assert second.wait(timeout=180) == 0, second.output_tail()
    (after,) = read_results(phase).values()
    assert is_done(after) and after[: len(before)] == before
    new = after[len(before):]
    checkpoints = [r["stage_iteration"] for r in before if r.get("checkpoint_dir_name")]
    assert new[0]["stage_iteration"] in {c + REPORT_EVERY for c in checkpoints}, (checkpoints, new[0])
    assert new[0]["stage_iteration"] > REPORT_EVERY  # went on from a checkpoint, not from the start
    (trial,) = read_results(storage / "ablation").values()
    assert is_done(trial)


def test_stage1_checkpoint_replaces_the_phase(start_study, tmp_path: Path) -> None:
    torch.manual_seed(7)
    given = DSR(preset("tiny")).latent.state_dict()
    torch.save(given, tmp_path / "latent.pt")
    storage = tmp_path / "storage"
    run = start_study("ablation", ["--preset", "tiny", "--variants", "DSR_U-", "--storage", str(storage),
                                   "--stage1-checkpoint", str(tmp_path / "latent.pt"), "--no-report"])
    assert run.wait(timeout=120) == 0, run.output_tail()
    assert "stage 1: training" not in run.stdout
    experiment = storage / "ablation"
    assert read_results(experiment / "stage1") == {}  # no stage-1 trial ran
    (stored,) = (experiment / "stage1").glob("*/latent.pt")
    assert "-file-" in stored.parent.name
    loaded = torch.load(stored, weights_only=True)
    assert loaded.keys() == given.keys() and all(torch.equal(loaded[k], given[k]) for k in given)
    (rows,) = read_results(experiment).values()
    assert is_done(rows) and [r["stage1_source"] for r in rows if r.get("stage1_source")] == ["loaded"]
