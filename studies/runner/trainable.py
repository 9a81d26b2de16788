"""The one Ray Tune trainable every study uses: stage 1 (shared) -> stage 2 -> stage 3 -> evaluation.

A trial reports losses as it trains and checkpoints its training state through `tune.report(..., checkpoint=)`;
a retried trial (a killed worker, a preempted node) resumes from its last checkpoint, and its iteration count
continues. Trials whose stage-1 configuration is equal share one stage-1 model: the first to ask trains it
(checkpointed like any stage) and publishes it to the experiment's storage; the others wait and load it.
"""

from __future__ import annotations

import io
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import torch
from pyarrow import fs as pafs
from ray import tune

from dsr.checkpoints import save_checkpoint
from dsr.data import build_demo
from dsr.evaluation.evaluate import evaluate_model
from dsr.evaluation.records import EvaluationRecords, evaluate_with_records, save_records, test_image_name
from dsr.evaluation.split import subset_indices
from dsr.model import DSR
from dsr.training import StageEvent, TrainingData, run_stage, stage_iterations
from dsr.training.pipeline import stages_for
from dsr.training.state import load_state, save_state
from studies.runner.trial import (RunSettings, dataset_split, default_interval, resolve_config, stage1_images,
                           stage1_key, train_images)

STATE_FILE = "state.pt"
MODEL_FILE = "model.pt"
RECORDS_FILE = "records.npz"  # per-image scores, pixel samples and thumbnails: what reports bootstrap and draw
HEARTBEAT_TIMEOUT_S = 600.0  # a stage-1 owner silent this long is presumed dead; another trial takes over


@ray.remote(num_cpus=0)
class Stage1Coordinator:
    """Hands out stage-1 training: one owner per key at a time, the others wait for its result in storage."""

    def __init__(self) -> None:
        self.owners: dict[str, tuple[str, float]] = {}
        self.ready: set[str] = set()

    def claim(self, key: str, trial_id: str) -> str:
        """'ready' (load it), 'train' (you own it) or 'wait'."""
        if key in self.ready:
            return "ready"
        owner = self.owners.get(key)
        if owner is None or owner[0] == trial_id or time.time() - owner[1] > HEARTBEAT_TIMEOUT_S:
            self.owners[key] = (trial_id, time.time())
            return "train"
        return "wait"

    def heartbeat(self, key: str, trial_id: str) -> None:
        if self.owners.get(key, ("",))[0] == trial_id:
            self.owners[key] = (trial_id, time.time())

    def publish(self, key: str) -> None:
        self.ready.add(key)
        self.owners.pop(key, None)

    def trainings(self) -> dict[str, Any]:
        return {"ready": sorted(self.ready), "owners": {k: v[0] for k, v in self.owners.items()}}


# ------------------------------------------------------------------------------------------- storage


def _storage_file(settings: RunSettings, key: str) -> tuple[pafs.FileSystem, str]:
    filesystem, root = pafs.FileSystem.from_uri(settings.storage)
    return filesystem, f"{root}/{settings.experiment}/stage1_cache/{key}/latent.pt"


def read_cached_latent(settings: RunSettings, key: str) -> dict[str, torch.Tensor] | None:
    filesystem, path = _storage_file(settings, key)
    if filesystem.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    with filesystem.open_input_stream(path) as stream:
        return torch.load(io.BytesIO(stream.read()), map_location="cpu", weights_only=True)


def write_cached_latent(settings: RunSettings, key: str, latent_state: dict[str, torch.Tensor]) -> None:
    filesystem, path = _storage_file(settings, key)
    filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    buffer = io.BytesIO()
    torch.save(latent_state, buffer)
    partial = path + ".partial"
    with filesystem.open_output_stream(partial) as stream:
        stream.write(buffer.getvalue())
    filesystem.move(partial, path)  # readers never see a half-written file


# --------------------------------------------------------------------------------------------- trial


class Reporter:
    """Every `tune.report` of a trial: the trial's identity on each result, a checkpoint when given.

    With `interim_eval` (searchers and schedulers need the metric in every result), each stage-2/3 checkpoint
    also evaluates the model on the test set; until the first such evaluation `image_auroc` is 0.5, the score of
    an uninformative detector. The final result always carries the real metrics.
    """

    def __init__(self, base: dict[str, Any], interim_eval: bool) -> None:
        self.base = base
        self.interim = {"image_auroc": 0.5} if interim_eval else {}

    def __call__(self, metrics: dict[str, Any], state: dict[str, Any] | None = None,
                 model: DSR | None = None, records: EvaluationRecords | None = None) -> None:
        metrics = {**self.base, **self.interim, **metrics}
        if state is None and model is None:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            if state is not None:
                save_state(state, os.path.join(folder, STATE_FILE))
            if model is not None:
                save_checkpoint(model, os.path.join(folder, MODEL_FILE))
            if records is not None:
                save_records(records, os.path.join(folder, RECORDS_FILE))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def _restored_state() -> dict[str, Any] | None:
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        path = Path(folder) / STATE_FILE
        if not path.is_file():
            return {"done": True}
        return load_state(path)


def _device() -> torch.device:
    return torch.device("cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu")


def dsr_trial(trial: dict[str, Any], settings: RunSettings) -> None:
    """One trial = (config, category, seed): stages, then metrics on the category's test set."""
    cpus = int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1) or 1)
    torch.set_num_threads(max(1, cpus))
    config = resolve_config(trial)
    device = _device()
    if trial["dataset"] == "demo":
        build_demo(trial["data_root"])  # idempotent and locked: every node builds (or finds) its own copy
    state = _restored_state()
    if state is not None and state.get("done"):
        return  # finished before a restart: its final result is already recorded
    trial_id = tune.get_context().get_trial_id()
    report = Reporter({"category": trial["category"], "variant": trial.get("variant", "DSR")},
                      settings.interim_eval)
    torch.manual_seed(config.seed)
    model = DSR(config).to(device)

    def on_event(event: StageEvent, extra: dict[str, Any] | None = None) -> None:
        if report.interim and event.state is not None and event.stage != "stage1":
            value = evaluate_model(model, trial_test_set(trial, config, settings, "search"), device=device,
                                   batch_size=settings.eval_batch_size)["image_auroc"]
            report.interim.update(image_auroc=value, search_image_auroc=value)
        report({"stage": event.stage, "stage_iteration": event.iteration, "stage_total": event.total,
                "train_iteration": train_iteration(config, event.stage, event.iteration),
                **event.losses, **(extra or {})}, event.state)
    stages = stages_for(config)[1:]
    if state is None or state["stage"] == "stage1":
        key = stage1_key(config, settings, trial)
        latent = _shared_stage1(model, trial, config, settings, key, trial_id, state, device, on_event, report)
        model.latent.load_state_dict(latent)
        state = None
    data = TrainingData(train_images(trial, config))
    for stage in stages:
        resume = None
        if state is not None:
            if stages.index(state["stage"]) > stages.index(stage):
                continue  # finished before the restart
            model.load_state_dict(state["model"])
            if state["stage"] == stage and state["finished"]:
                continue
            resume = state if state["stage"] == stage else None
        total = stage_iterations(model, stage)
        run_stage(stage, model, data, device=device, resume=resume, callback=on_event, progress=False,
                  report_every=settings.report_every or default_interval(total, 20),
                  checkpoint_every=settings.checkpoint_every or default_interval(total, 5))
        state = None
    model.eval()
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


def _shared_stage1(model: DSR, trial: dict[str, Any], config, settings: RunSettings, key: str, trial_id: str,
                   state: dict[str, Any] | None, device: torch.device, on_event,
                   report: Reporter) -> dict[str, torch.Tensor]:
    """The stage-1 latent model for `key`: loaded from storage, or trained here if this trial owns it."""
    coordinator = ray.get_actor(settings.coordinator)
    waited = False
    while True:
        cached = read_cached_latent(settings, key)
        if cached is not None:
            if waited:
                report({"stage": "stage1", "stage1_key": key, "stage1_source": "shared"})
            return cached
        verdict = ray.get(coordinator.claim.remote(key, trial_id))
        if verdict == "train":
            break
        if verdict == "wait" and not waited:
            report({"stage": "stage1", "stage1_key": key, "stage1_source": "waiting"})
            waited = True
        time.sleep(2.0)

    def on_stage1(event: StageEvent) -> None:
        coordinator.heartbeat.remote(key, trial_id)
        on_event(event, {"stage1_key": key, "stage1_source": "trained"})

    images = TrainingData(stage1_images(trial, config, settings))
    resume = state if state is not None and state["stage"] == "stage1" else None
    total = stage_iterations(model, "stage1")
    run_stage("stage1", model, images, device=device, resume=resume, callback=on_stage1, progress=False,
              report_every=settings.report_every or default_interval(total, 20),
              checkpoint_every=settings.checkpoint_every or default_interval(total, 5))
    latent = {k: v.cpu() for k, v in model.latent.state_dict().items()}
    write_cached_latent(settings, key, latent)
    ray.get(coordinator.publish.remote(key))
    return latent
