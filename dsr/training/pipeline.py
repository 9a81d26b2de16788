"""All three stages in a row, resumable from a folder: the notebook-sized entry point to DSR training.

    run = train_dsr(preset("small"), TrainingData(images), checkpoint_dir="runs/bottle")
    prediction = run.model.predict(test_images)

Each stage writes `<checkpoint_dir>/<stage>.pt` as it goes (every `checkpoint_every` iterations, every
`checkpoint_minutes` of wall time, and at its end); calling `train_dsr` again with the same folder resumes from the
latest of them: finished stages are skipped, the unfinished one continues. The loop is `run_stages`; this module
only says where its checkpoints go.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dsr.config import DSRConfig
from dsr.model import DSR
from dsr.training.loop import Callback, Schedule, StageEvent, run_stages
from dsr.training.state import STAGES, load_state, save_state
from dsr.training.steps import TrainingData


@dataclass
class TrainedRun:
    model: DSR
    states: dict[str, dict[str, Any]]  # final state of each stage this call trained or found finished


def stages_for(config: DSRConfig) -> list[str]:
    """The stages a config trains: stage 3 only when the upsampling module is used (not for DSR_U-)."""
    return ["stage1", "stage2", "stage3"] if config.use_upsampling else ["stage1", "stage2"]


def latest_state(folder: Path, stages: list[str], device: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The state of the last of `stages` that has a `<stage>.pt` in `folder` (it holds the whole model), if any."""
    for stage in reversed(stages):
        if (folder / f"{stage}.pt").is_file():
            return load_state(folder / f"{stage}.pt", device)
    return None


def train_dsr(config: DSRConfig, data: TrainingData, stage1_data: TrainingData | None = None, *,
              device: str | torch.device = "cpu", checkpoint_dir: str | Path | None = None,
              latent_state: dict[str, torch.Tensor] | None = None, callback: Callback | None = None,
              checkpoint_every: int = 0, checkpoint_minutes: float = 0.0, report_every: int = 50,
              progress: bool | None = None) -> TrainedRun:
    """Train DSR: stage 1 on `stage1_data` (default: `data`), then stages 2 and 3 on `data`.

    latent_state: a trained discrete latent model's state_dict; when given, stage 1 is skipped (the paper trains
    stage 1 once, on ImageNet, and reuses it for every category).
    """
    torch.manual_seed(config.seed)  # initial weights
    model = DSR(config).to(device)
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    stages = stages_for(config)
    if latent_state is not None:
        model.latent.load_state_dict(latent_state)
        stages.remove("stage1")
    resume = latest_state(folder, stages, device) if folder is not None else None

    def on_event(event: StageEvent) -> None:
        if event.state is not None and folder is not None:
            save_state(event.state, folder / f"{event.stage}.pt")
        if callback is not None:
            callback(event)

    schedule = Schedule(report_every=report_every, checkpoint_every=checkpoint_every,
                        checkpoint_minutes=checkpoint_minutes)
    states = run_stages(stages, model, data, stage1_data=stage1_data, resume=resume, callback=on_event,
                        schedule=schedule, device=device, progress=progress)
    return TrainedRun(model, states)


__all__ = ["STAGES", "TrainedRun", "latest_state", "stages_for", "train_dsr"]
