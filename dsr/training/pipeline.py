"""All three stages in a row, resumable from a folder: the notebook-sized entry point to DSR training.

    run = train_dsr(preset("small"), TrainingData(images), checkpoint_dir="runs/bottle")
    prediction = run.model.predict(test_images)

Each stage writes `<checkpoint_dir>/<stage>.pt` as it goes (every `checkpoint_every` iterations and at its end);
calling `train_dsr` again with the same folder resumes the unfinished stage and skips finished ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dsr.config import DSRConfig
from dsr.model import DSR
from dsr.training.loop import Callback, StageEvent, run_stage
from dsr.training.state import STAGES, load_state, save_state
from dsr.training.steps import TrainingData


@dataclass
class TrainedRun:
    model: DSR
    states: dict[str, dict[str, Any]]  # final state of each stage that ran


def stages_for(config: DSRConfig) -> list[str]:
    """The stages a config trains: stage 3 only when the upsampling module is used (not for DSR_U-)."""
    return ["stage1", "stage2", "stage3"] if config.use_upsampling else ["stage1", "stage2"]


def train_dsr(config: DSRConfig, data: TrainingData, stage1_data: TrainingData | None = None, *,
              device: str | torch.device = "cpu", checkpoint_dir: str | Path | None = None,
              latent_state: dict[str, torch.Tensor] | None = None, callback: Callback | None = None,
              checkpoint_every: int = 0, report_every: int = 50, progress: bool | None = None) -> TrainedRun:
    """Train DSR: stage 1 on `stage1_data` (default: `data`), then stages 2 and 3 on `data`.

    latent_state: a trained discrete latent model's state_dict; when given, stage 1 is skipped (the paper trains
    stage 1 once, on ImageNet, and reuses it for every category).
    """
    torch.manual_seed(config.seed)  # initial weights
    model = DSR(config).to(device)
    states: dict[str, dict[str, Any]] = {}
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    stages = stages_for(config)
    if latent_state is not None:
        model.latent.load_state_dict(latent_state)
        stages.remove("stage1")
    for stage in stages:
        path = folder / f"{stage}.pt" if folder is not None else None
        resume = load_state(path, device) if path is not None and path.is_file() else None
        if resume is not None and resume["finished"]:
            model.load_state_dict(resume["model"])
            states[stage] = resume
            continue

        def on_event(event: StageEvent, path: Path | None = path) -> None:
            if event.state is not None and path is not None:
                save_state(event.state, path)
            if callback is not None:
                callback(event)

        stage_data = stage1_data if stage == "stage1" and stage1_data is not None else data
        states[stage] = run_stage(stage, model, stage_data, device=device, resume=resume, callback=on_event,
                                  checkpoint_every=checkpoint_every, report_every=report_every, progress=progress)
    model.eval()
    return TrainedRun(model, states)


__all__ = ["STAGES", "TrainedRun", "stages_for", "train_dsr"]
