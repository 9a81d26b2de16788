"""The one Ray Tune trainable every study uses: stage-1 model (loaded) -> stage 2 -> stage 3 -> evaluation.

A trial runs the core's resumable loop (`dsr.training.run_stages`) and reports losses and checkpoints its
training state to Tune (`tune_io`) as the loop says; a retried trial (a killed worker, a preempted node) resumes
from its last checkpoint, and its iteration count continues. The stage-1 model was trained before the trial
started, by the study's stage-1 phase (`studies.runner.stage1`), and is read from the experiment's storage.
"""

from __future__ import annotations

from typing import Any

import torch

from dsr.data import build_demo_kind, is_demo_kind
from dsr.evaluation.evaluate import evaluate_model
from dsr.evaluation.records import EvaluationRecords, evaluate_with_records, test_image_name
from dsr.evaluation.split import subset_indices
from dsr.model import DSR
from dsr.training import StageEvent, TrainingData, run_stages, stages_for
from studies.runner import tune_io
from studies.runner.objective import PLACEHOLDERS
from studies.runner.stage1 import load_latent
from studies.runner.trial import RunSettings, dataset_split, local_trial, resolve_config, stage1_key, train_images


# --------------------------------------------------------------------------------------------- trial


class Reporter:
    """Every result of a trial: its identity on each, a checkpoint when given (`tune_io.report`).

    With `interim_eval` (searchers and schedulers need their metric in every result), each stage-2/3 checkpoint
    also evaluates the model on the search part of the test set and carries every metric (plain and `search_`);
    until the first such evaluation they are `objective.PLACEHOLDERS` (AUROC 0.5, the score of an uninformative
    detector; AP and AUPRO 0). The final result always carries the real metrics.
    """

    def __init__(self, base: dict[str, Any], interim_eval: bool) -> None:
        self.base = base
        self.interim = dict(PLACEHOLDERS) if interim_eval else {}

    def __call__(self, metrics: dict[str, Any], state: dict[str, Any] | None = None,
                 model: DSR | None = None, records: EvaluationRecords | None = None) -> None:
        tune_io.report({**self.base, **self.interim, **metrics}, state, model, records)


def dsr_trial(trial: dict[str, Any], settings: RunSettings) -> None:
    """One trial = (config, category, seed): stages, then metrics on the category's test set."""
    device = tune_io.start_trial()
    config = resolve_config(trial)
    key = stage1_key(config, settings, trial)  # from the data root as given (a URI is the same on every node)
    trial = local_trial(trial)  # --data s3://...: synced once into this node's cache
    if is_demo_kind(trial["dataset"]):  # demo, demo_hard: idempotent and locked, every node builds or finds its own
        build_demo_kind(trial["dataset"], trial["data_root"])
    state = tune_io.restored_state()
    if state is tune_io.FINISHED:
        return  # finished before a restart: its final result is already recorded
    report = Reporter({"category": trial["category"], "variant": trial.get("variant", "DSR"),
                       **tune_io.trial_hardware(device)}, settings.interim_eval)
    torch.manual_seed(config.seed)
    model = DSR(config).to(device)

    def on_event(event: StageEvent) -> None:
        if report.interim and event.state is not None:
            values = evaluate_model(model, trial_test_set(trial, config, settings, "search"), device=device,
                                    batch_size=settings.eval_batch_size)
            report.interim.update({**values, **{f"search_{name}": value for name, value in values.items()}})
        report({**tune_io.event_metrics(event),
                "train_iteration": train_iteration(config, event.stage, event.iteration)}, event.state)

    if state is None:  # a fresh start: the stage-1 model its phase trained (a resumed state holds it)
        model.latent.load_state_dict(load_latent(settings, key))  # Stage1Missing: its stage 1's error
        report({"stage": "stage1", "stage1_key": key, "stage1_source": "loaded", "train_iteration": 0})
    run_stages(stages_for(config)[1:], model, TrainingData(train_images(trial, config)), resume=state,
               callback=on_event, schedule=tune_io.loop_schedule(settings), device=device, progress=False)
    test = trial_test_set(trial, config, settings, "report")
    metrics, records = evaluate_with_records(model, test, batch_size=settings.eval_batch_size, device=device,
                                             center_crop=config.eval_center_crop, seed=config.seed)
    final = {"stage": "done", "train_iteration": train_iteration(config, "done", 0), **metrics,
             "eval_center_crop": config.eval_center_crop or 0, "has_masks": float(records.has_masks)}
    if settings.test_split:  # the searcher's metric stays the search part's; tables read report_<metric>
        search = evaluate_model(model, trial_test_set(trial, config, settings, "search"), device=device,
                                batch_size=settings.eval_batch_size)
        final.update({f"report_{name}": value for name, value in metrics.items()})
        final.update({name: value for name, value in search.items()})
        final.update({f"search_{name}": value for name, value in search.items()})
    report(final, model=model, records=records)


def train_iteration(config, stage: str, iteration: int) -> int:
    """Training progress on one clock for every trial of a preset: 0 in stage 1, the stage-2 iteration in stage
    2, stage-2 total + the stage-3 iteration in stage 3 (ASHA's time attribute: trials that trained, waited for
    or loaded stage 1 line up)."""
    if stage == "stage1":
        return 0
    if stage == "stage2":
        return iteration
    if stage == "stage3":
        return config.stage2_iterations + iteration
    return config.stage2_iterations + (config.stage3_iterations if config.use_upsampling else 0)


def trial_test_set(trial: dict[str, Any], config, settings: RunSettings | None = None, part: str | None = None):
    """The trial's test set, or one part of it ("search" / "report") when the study split it."""
    dataset = dataset_split(trial, config, "test")
    split = (settings.test_split or {}).get(trial["category"]) if settings is not None and part else None
    if split is None:
        return dataset
    names = [test_image_name(sample.image_path) for sample in dataset.samples]
    dataset.samples = tuple(dataset.samples[i] for i in subset_indices(names, split[part]))
    return dataset
