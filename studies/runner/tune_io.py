"""Where a trial's training loop writes to Ray Tune: results, and checkpoints holding its training state.

The loop (`dsr.training.run_stages`) decides when a report or a checkpoint is due; this module is the other half,
shared by the main trials (`trainable`) and the stage-1 phase (`stage1`): a checkpoint is a folder with the loop's
state (`state.pt`), and for a finished main trial its model and per-image records; a restarted trial resumes from
the state of its latest checkpoint.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from dsr.checkpoints import save_checkpoint
from dsr.evaluation.records import RECORDS_FILE, EvaluationRecords, save_records
from dsr.model import DSR
from dsr.provenance import node_hardware
from dsr.training import Schedule, StageEvent
from dsr.training.state import load_state, save_state
from studies.runner.trial import RunSettings

STATE_FILE = "state.pt"
MODEL_FILE = "model.pt"
FINISHED = {"finished_trial": True}  # restored from a checkpoint without a state: the trial's final one
REPORTS_PER_STAGE = 20  # with --report-every 0
CHECKPOINTS_PER_STAGE = 5  # with --checkpoint-every 0


def loop_schedule(settings: RunSettings) -> Schedule:
    """The study's report and checkpoint intervals (iterations, wall-time minutes) as the loop's Schedule."""
    return Schedule(report_every=settings.report_every, checkpoint_every=settings.checkpoint_every,
                    checkpoint_minutes=settings.checkpoint_minutes, reports_per_stage=REPORTS_PER_STAGE,
                    checkpoints_per_stage=CHECKPOINTS_PER_STAGE)


def restored_state() -> dict[str, Any] | None:
    """The training state of this trial's latest checkpoint (None: a fresh start; FINISHED: it had finished)."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        path = Path(folder) / STATE_FILE
        return load_state(path) if path.is_file() else FINISHED


def report(metrics: dict[str, Any], state: dict[str, Any] | None = None, model: DSR | None = None,
           records: EvaluationRecords | None = None) -> None:
    """One `tune.report`; with a state, model or records they are its checkpoint (one folder, written whole)."""
    if state is None and model is None and records is None:
        tune.report(metrics)
        return
    with tempfile.TemporaryDirectory() as folder:
        if state is not None:
            save_state(state, os.path.join(folder, STATE_FILE))
        if model is not None:
            save_checkpoint(model, os.path.join(folder, MODEL_FILE))
        if records is not None:
            save_records(records, os.path.join(folder, RECORDS_FILE))
        if metrics.get("stage") == "done":  # the trial's end, kept where a resume finds it (recovery.py)
            from studies.runner.recovery import write_final

            write_final(folder, metrics)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def event_metrics(event: StageEvent) -> dict[str, Any]:
    """A loop event as result fields: its stage, progress and mean losses."""
    return {"stage": event.stage, "stage_iteration": event.iteration, "stage_total": event.total, **event.losses}


def start_trial() -> torch.device:
    """Use the CPUs Ray assigned this trial (torch threads) and return its device (a GPU when assigned one; where
    CUDA is unusable, one line naming the node, torch's CUDA version and the driver's: never the CPU silently)."""
    from studies.runner.devices import trial_device

    cpus = int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1) or 1)
    torch.set_num_threads(max(1, cpus))
    return trial_device()


def trial_hardware(device: torch.device) -> dict[str, Any]:
    """What this trial holds and where it runs, for the report's cost and provenance: the CPUs and GPUs Ray
    assigned it, the node's host name, CPU model and (on a GPU) the GPU's model."""
    assigned = ray.get_runtime_context().get_assigned_resources()
    hardware = node_hardware(str(device))
    return {"cpus": float(assigned.get("CPU", 0.0)), "gpus": float(assigned.get("GPU", 0.0)),
            "host": hardware["host"], "cpu_model": hardware["cpu_model"], "gpu_model": hardware["gpu_model"]}
