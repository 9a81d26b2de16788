"""What one trial is: its DSRConfig, its data, and where its shared stage-1 model lives. No Ray in here.

A trial's Tune config is a plain dict (see `TRIAL_KEYS`); `resolve_config` turns it into a validated `DSRConfig`
(preset, then variant, then overrides, then seed) so a study can sweep any config field through `overrides`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dsr.anomalies import make_strategy
from dsr.config import DSRConfig, preset
from dsr.data import build_dataset, is_demo_kind, list_categories, load_all
from dsr.data.demo import demo_stage1_folder
from dsr.protocol import evaluation_crop
from dsr.training.loop import per_stage_interval
from dsr.variants import apply_variant

STAGE1_MAX_IMAGES = 2000  # bounds stage-1 memory (256x256 float: ~1.5 GiB) on large datasets

TRIAL_KEYS = ("study", "preset", "variant", "category", "seed", "dataset", "data_root", "overrides")

# Fields that decide the discrete latent model: trials equal in these share one stage-1 model.
STAGE1_FIELDS = (
    "image_size", "channel_order", "antialias", "vq_hidden", "vq_residual_hidden", "vq_residual_layers",
    "embedding_dim", "codebook_size", "commitment_cost", "ema_decay", "ema_epsilon", "codebook_restart_threshold",
    "stage1_iterations", "stage1_lr", "stage1_batch_size", "seed",
)

STAGE1_ARCHITECTURE = ("image_size", "channel_order", "antialias", "vq_hidden", "vq_residual_hidden",
                       "vq_residual_layers", "embedding_dim", "codebook_size")


@dataclass(frozen=True)
class RunSettings:
    """Per-study constants every trial receives (not searched over)."""

    storage: str  # the experiment's storage root: a local path or a cloud URI (s3://...)
    experiment: str  # the experiment's name (a folder under storage)
    categories: tuple[str, ...]  # the study's categories (stage 1 uses every category of the dataset)
    stage1_data: str | None = None  # a folder of images for stage 1 instead (e.g. an ImageNet subset)
    report_every: int = 0  # iterations between progress reports (0: about 20 per stage)
    checkpoint_every: int = 0  # iterations between checkpoints (0: about 5 per stage)
    checkpoint_minutes: float = 0.0  # also a checkpoint once this much wall time passed since the last (0: off)
    eval_batch_size: int = 8
    interim_eval: bool = False  # evaluate at each checkpoint and carry image_auroc in every report (searchers)
    stage1_checkpoint: str | None = None  # a stage-1 model file used instead of training stage 1
    test_split: dict[str, dict[str, list[str]]] | None = None  # category -> search/report image names (searches)
    extra: dict[str, Any] = field(default_factory=dict)


def resolve_config(trial: dict[str, Any]) -> DSRConfig:
    """preset -> variant -> overrides -> seed; ValueError names the bad variant, field or value."""
    config = apply_variant(preset(trial.get("preset", "small")), trial.get("variant", "DSR"))
    overrides = dict(trial.get("overrides") or {})
    config = config.replace(**overrides, seed=int(trial.get("seed", 0)))
    if config.eval_center_crop == "protocol":  # the reference's protocol for this dataset (MVTec: 224 of 256)
        config = config.replace(eval_center_crop=evaluation_crop(trial.get("dataset", ""), config.image_size))
    if config.anomaly_source == "feature":
        make_strategy(config)  # an unknown strategy or bad sampling_params fails here, before training
    return config


def stage1_key(config: DSRConfig, settings: RunSettings, trial: dict[str, Any],
               fingerprints: dict[str, str] | None = None) -> str:
    """A short stable hash of everything stage 1 depends on: its config fields and its training images.

    fingerprints: data root -> data_fingerprint, filled and reused across calls so that keying many trial
    configurations walks each data root once (stage1.plan), not once per configuration."""
    if settings.stage1_checkpoint:  # a given model: only the fields that decide whether it fits
        described = {name: getattr(config, name) for name in STAGE1_ARCHITECTURE}
        described["checkpoint"] = settings.stage1_checkpoint
        digest = hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()
        return f"K{config.codebook_size}-file-{digest[:12]}"
    described = {name: getattr(config, name) for name in STAGE1_FIELDS}
    # the images themselves, not where they lie: equal data gives equal keys on every node and in every
    # experiment (the shared stage-1 store), changed data a new key
    def fingerprint(root: str | Path) -> str:
        if fingerprints is None:
            return data_fingerprint(root)
        if str(root) not in fingerprints:
            fingerprints[str(root)] = data_fingerprint(root)
        return fingerprints[str(root)]

    described["data"] = (fingerprint(settings.stage1_data) if settings.stage1_data else
                         [trial.get("dataset"), fingerprint(local_trial(trial)["data_root"])])
    digest = hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()
    return f"K{config.codebook_size}-{digest[:12]}"


KEPT_HIDDEN_FILES = (".dsr_split.json", ".dsr_demo_complete.json")  # hidden files that decide what is trained on


def data_fingerprint(root: str | Path) -> str:
    """A hash of the relative path and size of every file under `root` (hidden files left out but the flat
    layout's saved split and the demo's build parameters): the same data gives the same fingerprint wherever it
    lies (a URI synced into a node's cache, another machine), a changed or added image changes it."""
    root = Path(root)
    entries = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        for name in files:
            if not name.startswith(".") or name in KEPT_HIDDEN_FILES:
                path = Path(folder) / name
                entries.append((path.relative_to(root).as_posix(), path.stat().st_size))
    return hashlib.sha256(json.dumps(sorted(entries)).encode()).hexdigest()[:16]


def local_trial(trial: dict[str, Any]) -> dict[str, Any]:
    """The trial with its data on this node: a `--data s3://...` root synced once into the node's cache; a demo
    kind (demo, demo_hard) at the driver's path, or built into this node's cache where that path does not hold it."""
    from studies.runner.storage import is_remote, local_dataset, node_demo_root

    if not is_remote(str(trial.get("data_root", ""))):
        if is_demo_kind(trial.get("dataset")) and trial.get("data_root"):
            return {**trial, "data_root": node_demo_root(trial["data_root"], trial["dataset"])}
        return trial
    return {**trial, "data_root": local_dataset(trial["data_root"])}


def dataset_split(trial: dict[str, Any], config: DSRConfig, split: str, category: str | None = None):
    return build_dataset(trial["dataset"], trial["data_root"], category or trial["category"], split,
                         config.image_size, config.channel_order, antialias=config.antialias)


def train_images(trial: dict[str, Any], config: DSRConfig) -> torch.Tensor:
    return load_all(dataset_split(trial, config, "train"), progress=False).images


def stage1_images(trial: dict[str, Any], config: DSRConfig, settings: RunSettings) -> torch.Tensor:
    """Stage-1 training images: a user folder of images, else the normal train images of every category of the
    dataset (at most STAGE1_MAX_IMAGES, spread evenly over categories), plus, for the demos, their folder of general
    photographs. The paper trains stage 1 once on ImageNet so that its codebook can represent what the object
    categories never show (a green stain on grey gravel): an anomaly the general decoder cannot reconstruct cannot
    be detected. Without extra data, all categories together are the closest stand-in a study has."""
    if settings.stage1_data:
        from studies.runner.storage import local_dataset  # --stage1-data s3://...: synced once per node

        return _folder_images(Path(local_dataset(settings.stage1_data)), config)
    categories = list_categories(trial["dataset"], trial["data_root"])
    per_category = max(1, STAGE1_MAX_IMAGES // len(categories))
    images = []
    for category in categories:
        dataset = dataset_split(trial, config, "train", category)
        keep = torch.linspace(0, len(dataset.samples) - 1, min(per_category, len(dataset.samples))).long()
        dataset.samples = tuple(dataset.samples[int(i)] for i in keep.unique())
        images.append(load_all(dataset, progress=False).images)
    photos = demo_stage1_folder(trial["data_root"]) if is_demo_kind(trial["dataset"]) else None
    if photos is not None:  # the demo's stand-in for ImageNet: a codebook that can express the anomalies
        images.append(_folder_images(photos, config))
    return torch.cat(images)


def _folder_images(folder: Path, config: DSRConfig) -> torch.Tensor:
    """Every image in a folder (recursively), decoded at the config's size."""
    from dsr.data import AnomalyDataset, Sample
    from dsr.data.io import is_image_file

    files = sorted(p for p in Path(folder).rglob("*") if is_image_file(p))
    if not files:
        raise ValueError(f"--stage1-data {folder}: no images found")
    samples = [Sample(p, 0, None, "stage1", "good") for p in files]
    dataset = AnomalyDataset(samples, config.image_size, config.channel_order, antialias=config.antialias,
                             name="stage1")
    return load_all(dataset, progress=False).images


def default_interval(total: int, parts: int) -> int:
    """About `parts` reports or checkpoints in `total` iterations: what --report-every/--checkpoint-every 0 mean."""
    return per_stage_interval(total, parts)
