"""Run a model's `predict` over a test set and compute every metric; average metrics over categories."""

from __future__ import annotations

import math
import warnings
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from dsr.data.dataset import DataTensors
from dsr.evaluation.metrics import aupro, center_crop as crop, image_metrics, pixel_metrics
from dsr.protocol import evaluation_crop

METRIC_NAMES = ("image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "aupro")
PIXEL_METRIC_NAMES = ("pixel_auroc", "pixel_ap", "aupro")
DEFECT_METRIC_NAMES = ("image_auroc", "pixel_ap")  # broken down per defect type (test folder name)
NORMAL_TYPE = "good"  # the defect type of normal test images (MVTec's folder name)


def _batches(dataset: Dataset | DataTensors, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor,
                                                                                   torch.Tensor]]:
    """(images (B,3,S,S), masks (B,1,S,S), labels (B,)) from a dict-item Dataset or in-memory DataTensors."""
    if isinstance(dataset, DataTensors):
        for start in range(0, len(dataset.labels), batch_size):
            end = start + batch_size
            yield dataset.images[start:end], dataset.masks[start:end], dataset.labels[start:end]
        return
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0):
        yield batch["image"], batch["mask"], torch.as_tensor(batch["label"])


@torch.inference_mode()
def predict_all(
    model: nn.Module, dataset: Dataset | DataTensors, batch_size: int = 8, device: str | torch.device = "cpu"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(image scores (N,), pixel maps (N,S,S), labels (N,), masks (N,S,S)) of `model.predict` over a dataset."""
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    was_training = model.training
    model.eval()
    scores, maps, labels, masks = [], [], [], []
    try:
        for images, batch_masks, batch_labels in _batches(dataset, batch_size):
            prediction = model.predict(images.to(device))
            batch_maps = prediction.pixel_maps.float().cpu()  # (B, S, S)
            if batch_maps.shape != batch_masks[:, 0].shape:
                raise ValueError(f"model.predict returned pixel maps of shape {tuple(batch_maps.shape)} for masks "
                                 f"of shape {tuple(batch_masks[:, 0].shape)}; they must match")
            scores.append(prediction.image_scores.float().cpu().reshape(-1))
            maps.append(batch_maps)
            labels.append(batch_labels.reshape(-1))
            masks.append(batch_masks[:, 0] > 0.5)
    finally:
        model.train(was_training)
    if not scores:
        raise ValueError("the evaluation dataset is empty")
    return (torch.cat(scores).numpy(), torch.cat(maps).numpy(), torch.cat(labels).numpy(),
            torch.cat(masks).numpy())


def evaluate_model(
    model: nn.Module,
    dataset: Dataset | DataTensors,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    center_crop: int | str | None = "protocol",
    by_defect: bool = False,
) -> dict[str, float]:
    """image_auroc, image_ap, pixel_auroc, pixel_ap and aupro (FPR <= 0.3) of `model.predict` on a test set.

    dataset: an AnomalyDataset (or any Dataset with image/mask/label dict items) or DataTensors. center_crop:
    "protocol" (default) crops maps and masks as the reference does for the dataset's kind before the pixel
    metrics (MVTec: the 224 centre of 256; see dsr.protocol), an int crops that many pixels, None keeps whole maps
    (image scores are never cropped).
    Undefined metrics are NaN (with a warning); a dataset without masks (`has_masks` False) has NaN pixel metrics
    by design (no warning): its anomalies are known per image only.
    by_defect: also "image_auroc/<defect>" and "pixel_ap/<defect>" per defect type (see `defect_metrics`); needs
    a dataset with `samples` (defect_type per image).
    """
    scores, maps, labels, masks = predict_all(model, dataset, batch_size, device)
    crop = resolve_center_crop(center_crop, dataset, maps.shape[-1])
    metrics = metrics_from_predictions(scores, maps, labels, masks, has_masks(dataset), crop)
    if by_defect:
        per_defect = defect_metrics(scores, maps, labels, masks, defect_types(dataset), has_masks(dataset), crop)
        metrics.update(flatten_defect_metrics(per_defect))
    return metrics


def defect_types(dataset: object) -> list[str]:
    """The defect type (test folder name, "good" for normal images) of every image of a dataset, in order."""
    samples = getattr(dataset, "samples", None)
    if samples is None:
        raise ValueError("per-defect metrics need a dataset with samples (an AnomalyDataset), not bare tensors")
    return [str(s.defect_type) for s in samples]


def defect_metrics(scores: np.ndarray, maps: np.ndarray, labels: np.ndarray, masks: np.ndarray,
                   types: Sequence[str], with_masks: bool = True, center_crop: int | None = None
                   ) -> dict[str, dict[str, float]]:
    """Image AUROC and pixel AP per defect type: that type's images against *all* normal test images.

    A category's mean can hide a defect kind the model misses (a detector blind to dark holes still scores
    well when cracks are easy); this breakdown shows it. types: (N,) defect type per image ("good" = normal);
    anomalous images of type "good" are impossible by construction and raise ValueError. Pixel AP is NaN
    without masks; every value is NaN when there is no normal test image.
    """
    types = np.asarray(types, dtype=str)
    labels = np.asarray(labels).astype(bool)
    if types.shape != labels.shape:
        raise ValueError(f"defect types {types.shape} and labels {labels.shape} differ in length")
    if (labels & (types == NORMAL_TYPE)).any() or (~labels & (types != NORMAL_TYPE)).any():
        raise ValueError(f"labels disagree with defect types: images of type {NORMAL_TYPE!r} must be normal, "
                         "every other type anomalous")
    normal = types == NORMAL_TYPE
    maps, masks = crop(maps, center_crop), crop(masks, center_crop)
    out: dict[str, dict[str, float]] = {}
    for defect in sorted(set(types[~normal].tolist())):
        chosen = normal | (types == defect)
        values = {"image_auroc": math.nan, "pixel_ap": math.nan}
        if normal.any():
            values["image_auroc"] = image_metrics(scores[chosen], labels[chosen])["image_auroc"]
            if with_masks:
                values["pixel_ap"] = pixel_metrics(maps[chosen], masks[chosen])["pixel_ap"]
        out[defect] = values
    return out


def flatten_defect_metrics(per_defect: dict[str, dict[str, float]]) -> dict[str, float]:
    """{"hole": {"image_auroc": x}} -> {"image_auroc/hole": x}: flat keys for result files."""
    return {f"{metric}/{defect}": value for defect, values in per_defect.items() for metric, value in values.items()}


def resolve_center_crop(center_crop: int | str | None, dataset: object, image_size: int) -> int | None:
    """The pixel crop to use: "protocol" is the reference's for `dataset.kind` (none for in-memory tensors)."""
    if center_crop == "protocol":
        return evaluation_crop(getattr(dataset, "kind", ""), image_size)
    return center_crop  # type: ignore[return-value]


def has_masks(dataset: Dataset | DataTensors) -> bool:
    """Whether the dataset's anomalous images have pixel masks (in-memory tensors are taken to have them)."""
    return bool(getattr(dataset, "has_masks", True))


def metrics_from_predictions(scores: np.ndarray, maps: np.ndarray, labels: np.ndarray, masks: np.ndarray,
                             with_masks: bool = True, center_crop: int | None = None) -> dict[str, float]:
    """Every metric from predictions; without masks the pixel metrics are NaN (not defined, no warning)."""
    metrics = image_metrics(scores, labels)
    if not with_masks:
        return {**metrics, **{name: math.nan for name in PIXEL_METRIC_NAMES}}
    maps, masks = crop(maps, center_crop), crop(masks, center_crop)
    return {**metrics, **pixel_metrics(maps, masks), "aupro": aupro(maps, masks)}


def mean_over_categories(per_category: dict[str, dict[str, float]]) -> dict[str, float]:
    """The mean of each metric over categories (the paper's summary), skipping NaN values with a warning.

    A metric missing or NaN in every category is NaN. Raises ValueError on an empty input.
    """
    if not per_category:
        raise ValueError("mean_over_categories needs at least one category")
    names = list(dict.fromkeys(name for metrics in per_category.values() for name in metrics))
    means = {}
    for name in names:
        values = {cat: float(m[name]) for cat, m in per_category.items() if name in m}
        skipped = sorted(cat for cat, v in values.items() if math.isnan(v))
        missing = sorted(set(per_category) - set(values))
        if skipped or missing:
            warnings.warn(f"mean of {name} leaves out categories {skipped + missing} (NaN or missing)",
                          RuntimeWarning, stacklevel=2)
        kept = [v for v in values.values() if not math.isnan(v)]
        means[name] = float(np.mean(kept)) if kept else float("nan")
    return means
