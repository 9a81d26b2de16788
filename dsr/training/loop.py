"""The training loop shared by DSR's three stages: step, log, checkpoint, stop, resume.

`run_stage` trains one stage for the iterations its config gives (or until `stop_after`), reports progress to a
callback, and returns a resumable state; passing that state back as `resume` continues exactly where it stopped
(model, optimiser, learning-rate schedule, RNG and iteration), so N iterations straight and N/2 + N/2 give the
same weights on the CPU.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from dsr.anomalies import TextureSource, make_strategy
from dsr.model import DSR
from dsr.training.state import STAGES, check_state, make_state
from dsr.training.steps import TrainingData, stage1_step, stage2_step, stage3_step, trained_modules


@dataclass
class StageEvent:
    """What the callback receives: progress, mean losses since the last event, and a state when one is due."""

    stage: str
    iteration: int  # iterations completed in this stage
    total: int
    losses: dict[str, float] = field(default_factory=dict)
    state: dict[str, Any] | None = None  # resumable training state (every checkpoint_every and at the end)


Callback = Callable[[StageEvent], None]


def stage_iterations(model: DSR, stage: str) -> int:
    c = model.config
    return {"stage1": c.stage1_iterations, "stage2": c.stage2_iterations, "stage3": c.stage3_iterations}[stage]


def stage_learning_rate(model: DSR, stage: str) -> float:
    c = model.config
    return {"stage1": c.stage1_lr, "stage2": c.stage2_lr, "stage3": c.stage3_lr}[stage]


def learning_rate(base: float, iteration: int, total: int, decay_at: float, factor: float) -> float:
    """Step schedule: base, then base * factor from iteration decay_at * total on (paper: x0.1 at 80%)."""
    return base * factor if iteration >= int(decay_at * total) else base


def freeze_for(model: DSR, stage: str) -> list[torch.nn.Parameter]:
    """Set requires_grad and train/eval modes for a stage; return the parameters it optimises.

    The codebooks never take gradients (they learn by EMA in stage 1 only); the latent model is in eval mode
    after stage 1, so its codebooks stay fixed.
    """
    codebook = {id(p) for q in (model.latent.quantizer_hi, model.latent.quantizer_lo) for p in q.parameters()}
    model.requires_grad_(False)
    model.eval()
    trained = []
    for module in trained_modules(model, stage):
        module.train()
        for p in module.parameters():
            if id(p) not in codebook:
                p.requires_grad_(True)
                trained.append(p)
    return trained


def stage_seed(seed: int, stage: str) -> int:
    return seed * 1000 + STAGES.index(stage) + 1


def run_stage(stage: str, model: DSR, data: TrainingData, *, device: str | torch.device | None = None,
              resume: dict[str, Any] | None = None, stop_after: int | None = None, callback: Callback | None = None,
              report_every: int = 50, checkpoint_every: int = 0, progress: bool | None = None,
              textures: TextureSource | None = None) -> dict[str, Any]:
    """Train one stage of `model` in place and return its resumable state.

    stage: "stage1" (discrete latent model), "stage2" (restriction modules, object decoder, detection module) or
    "stage3" (upsampling module). resume: a state from an earlier call for the same stage (raises ValueError for
    another stage's). stop_after: stop once this many iterations of the stage are done (for tests and
    preemption). textures: for anomaly_source="image"; default from config.texture_dir (None: synthesised).
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; known stages: {', '.join(STAGES)}")
    config = model.config
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    total = stage_iterations(model, stage)
    base_lr = stage_learning_rate(model, stage)
    parameters = freeze_for(model, stage)
    optimizer = torch.optim.Adam(parameters, lr=base_lr)
    generator = torch.Generator().manual_seed(stage_seed(config.seed, stage))
    start = 0
    if resume is not None:
        check_state(resume)
        if resume["stage"] != stage:
            raise ValueError(f"cannot resume {stage} from a {resume['stage']} state")
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        generator.set_state(resume["generator"])
        start = int(resume["iteration"])
    end = total if stop_after is None else max(start, min(total, stop_after))

    if stage == "stage2":
        strategy = make_strategy(config) if config.anomaly_source == "feature" else None
        if config.anomaly_source == "image" and textures is None:
            textures = TextureSource(config.texture_dir, config.image_size)

        def step():
            return stage2_step(model, data, generator, device, strategy, textures)
    elif stage == "stage1":
        def step():
            return stage1_step(model, data, generator, device)
    else:
        def step():
            return stage3_step(model, data, generator, device)

    decay_at = config.stage3_lr_decay_at if stage == "stage3" else config.lr_decay_at
    if progress is None:
        progress = sys.stderr.isatty()
    sums: dict[str, float] = {}
    count = 0
    with tqdm(total=total, initial=start, desc=stage, disable=not progress, dynamic_ncols=True) as bar:
        for iteration in range(start, end):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(base_lr, iteration, total, decay_at, config.lr_decay_factor)
            optimizer.zero_grad(set_to_none=True)
            loss, parts = step()
            if loss is not None:  # stage 2 runs its own (micro-batched) backward pass
                loss.backward()
            optimizer.step()
            for name, value in parts.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            count += 1
            done = iteration + 1
            bar.update(1)
            report_due = done % max(report_every, 1) == 0 or done == end
            checkpoint_due = done == end or (checkpoint_every > 0 and done % checkpoint_every == 0)
            if report_due:
                bar.set_postfix({k: f"{v / count:.4f}" for k, v in sums.items()}, refresh=False)
            if callback is not None and (report_due or checkpoint_due):
                state = make_state(stage, done, total, model, optimizer, generator, done >= total) \
                    if checkpoint_due else None
                callback(StageEvent(stage, done, total, {k: v / max(count, 1) for k, v in sums.items()}, state))
                sums, count = {}, 0
    model.eval()
    return make_state(stage, end, total, model, optimizer, generator, end >= total)
