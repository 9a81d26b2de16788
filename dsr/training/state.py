"""The resumable state of a training stage: model, optimiser, RNG and iteration, as one weights_only-safe dict.

A state is a plain dict of tensors and plain values, so it can be saved with `torch.save` and read back with
`torch.load(..., weights_only=True)` anywhere (a local folder, a Ray Tune checkpoint, cloud storage).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from dsr.checkpoints import read_weights_only, write_atomic
from dsr.config import DSRConfig
from dsr.model import DSR

STATE_FORMAT = "dsr-studies/train-state/1"
STAGES = ("stage1", "stage2", "stage3")


def make_state(stage: str, iteration: int, total: int, model: DSR, optimizer: torch.optim.Optimizer,
               generator: torch.Generator, finished: bool) -> dict[str, Any]:
    """Snapshot everything a stage needs to continue exactly where it stopped: copies, so that training on after
    a checkpoint (the optimiser's steps update its moments in place) never changes a state already taken."""
    return {
        "format": STATE_FORMAT,
        "stage": stage,
        "iteration": iteration,
        "total": total,
        "finished": finished,
        "config": model.config.to_dict(),
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "generator": generator.get_state(),
    }


def check_state(state: dict[str, Any], where: str = "training state") -> dict[str, Any]:
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"{where}: not a dsr-studies training state (expected format {STATE_FORMAT!r})")
    if state.get("stage") not in STAGES:
        raise ValueError(f"{where}: unknown stage {state.get('stage')!r}")
    return state


def save_state(state: dict[str, Any], path: str | Path) -> Path:
    """Write atomically: an interrupted save never replaces a good state with a half-written one."""
    return write_atomic(state, path)


def load_state(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    return check_state(read_weights_only(path, map_location, "training state"), str(path))


def model_from_state(state: dict[str, Any], device: str | torch.device = "cpu") -> DSR:
    """The model as it was when the state was taken (config and weights)."""
    model = DSR(DSRConfig.from_dict(state["config"]))
    model.load_state_dict(state["model"])
    return model.to(device)
