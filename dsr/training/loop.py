"""The one resumable training loop of DSR: step, log, checkpoint, stop, resume; stage by stage.

`run_stage` trains one stage for the iterations its config gives (or until `stop_after`), reports progress to a
callback, and returns a resumable state; passing that state back as `resume` continues exactly where it stopped
(model, optimiser, learning-rate schedule, RNG and iteration), so N iterations straight and N/2 + N/2 give the
same weights on the CPU. `run_stages` runs several stages in order from one saved state (the last one any of them
took), skipping the stages finished before it. The loop decides when a report and a checkpoint are due (a
`Schedule`: every N iterations, every M minutes of wall time, and at each stage's end); what a checkpoint is
written to and where a report goes is the caller's, through the callback: a folder (`train_dsr`), a Ray Tune
checkpoint (the study runner).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
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
    state: dict[str, Any] | None = None  # resumable training state, when a checkpoint is due


Callback = Callable[[StageEvent], None]
Clock = Callable[[], float]  # seconds, monotonic (time.monotonic; tests pass a fake one)


@dataclass(frozen=True)
class Schedule:
    """When `run_stages` reports and checkpoints; each stage also checkpoints (and reports) at its end.

    An interval of 0 means "about `*_per_stage` times per stage" (0 per stage: never, but for the stage's end).
    checkpoint_minutes > 0 adds a checkpoint whenever that much wall time passed since the last one, so a
    preempted run (a reclaimed spot node) loses at most that much work whatever an iteration costs.
    """

    report_every: int = 50
    checkpoint_every: int = 0
    checkpoint_minutes: float = 0.0
    reports_per_stage: int = 0
    checkpoints_per_stage: int = 0

    def __post_init__(self) -> None:
        for name in ("report_every", "checkpoint_every", "checkpoint_minutes", "reports_per_stage",
                     "checkpoints_per_stage"):
            if getattr(self, name) < 0:
                raise ValueError(f"Schedule.{name} must be >= 0, got {getattr(self, name)}")

    def intervals(self, total: int) -> tuple[int, int]:
        """(report_every, checkpoint_every) in iterations for a stage of `total` iterations (0: none)."""
        def every(value: int, parts: int) -> int:
            return value or (per_stage_interval(total, parts) if parts else 0)
        return every(self.report_every, self.reports_per_stage), every(self.checkpoint_every,
                                                                       self.checkpoints_per_stage)


def per_stage_interval(total: int, parts: int) -> int:
    """The interval that gives about `parts` events in `total` iterations (at least 1)."""
    return max(1, total // parts)


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
              report_every: int = 50, checkpoint_every: int = 0, checkpoint_minutes: float = 0.0,
              progress: bool | None = None, textures: TextureSource | None = None,
              clock: Clock = time.monotonic) -> dict[str, Any]:
    """Train one stage of `model` in place and return its resumable state.

    stage: "stage1" (discrete latent model), "stage2" (restriction modules, object decoder, detection module) or
    "stage3" (upsampling module). resume: a state from an earlier call for the same stage (raises ValueError for
    another stage's). stop_after: stop once this many iterations of the stage are done (for tests and
    preemption). The callback gets an event every `report_every` iterations, and one carrying the state every
    `checkpoint_every` iterations (0: none), once `checkpoint_minutes` of wall time (by `clock`) passed since the
    stage started or last checkpointed (0: never), and at the end. textures: for anomaly_source="image"; default
    from config.texture_dir (None: synthesised).
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
            if strategy is not None:  # adaptive strategies (e.g. curriculum) follow training progress
                strategy.set_progress(iteration, total)
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
    last_checkpoint = clock()
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
            checkpoint_due = done == end or (checkpoint_every > 0 and done % checkpoint_every == 0) or \
                (checkpoint_minutes > 0 and clock() - last_checkpoint >= 60.0 * checkpoint_minutes)
            if checkpoint_due:
                last_checkpoint = clock()
            if report_due:
                bar.set_postfix({k: f"{v / count:.4f}" for k, v in sums.items()}, refresh=False)
            if callback is not None and (report_due or checkpoint_due):
                state = make_state(stage, done, total, model, optimizer, generator, done >= total) \
                    if checkpoint_due else None
                callback(StageEvent(stage, done, total, {k: v / max(count, 1) for k, v in sums.items()}, state))
                sums, count = {}, 0
    model.eval()
    return make_state(stage, end, total, model, optimizer, generator, end >= total)


def run_stages(stages: Sequence[str], model: DSR, data: TrainingData, *, stage1_data: TrainingData | None = None,
               resume: dict[str, Any] | None = None, callback: Callback | None = None,
               schedule: Schedule = Schedule(), device: str | torch.device | None = None,
               progress: bool | None = None, textures: TextureSource | None = None,
               clock: Clock = time.monotonic) -> dict[str, dict[str, Any]]:
    """Train `stages` of `model` in order, in place; return the final state of each stage run or found finished.

    resume: the last state any of these stages saved (through the callback); it holds the whole model, so the
    stages before its own are skipped as finished, its own continues where it stopped (or is skipped when it had
    finished), the later ones run. Raises ValueError for a state of a stage not in `stages`. stage1_data: stage
    1's images when they differ from `data` (the paper trains stage 1 on ImageNet).
    """
    stages = list(stages)
    unknown = [stage for stage in stages if stage not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage {unknown[0]!r}; known stages: {', '.join(STAGES)}")
    first = 0
    if resume is not None:
        check_state(resume)
        if resume["stage"] not in stages:
            raise ValueError(f"cannot resume stages {', '.join(stages)} from a {resume['stage']} state")
        first = stages.index(resume["stage"])
        model.load_state_dict(resume["model"])
    states: dict[str, dict[str, Any]] = {}
    for stage in stages[first:]:
        if resume is not None and stage == resume["stage"] and resume["finished"]:
            states[stage] = resume
            continue
        report_every, checkpoint_every = schedule.intervals(stage_iterations(model, stage))
        stage_data = stage1_data if stage == "stage1" and stage1_data is not None else data
        states[stage] = run_stage(
            stage, model, stage_data, device=device, callback=callback, progress=progress, textures=textures,
            resume=resume if resume is not None and stage == resume["stage"] else None, clock=clock,
            report_every=report_every or stage_iterations(model, stage), checkpoint_every=checkpoint_every,
            checkpoint_minutes=schedule.checkpoint_minutes)
    model.eval()
    return states
