"""Anomaly-detection metrics: image AUROC / AP, pixel AUROC / AP and AUPRO (MVTec AD benchmark definition).

Inputs may be numpy arrays or torch tensors. A metric that is undefined for the given data (one class only, no
anomalous pixels) is NaN with a RuntimeWarning instead of an exception, so one odd category does not stop a study.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score

# 8-connectivity for defect regions, as the MVTec AD evaluation code labels them
_REGION_STRUCTURE = np.ones((3, 3), dtype=int)


def _as_numpy(values: Any, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().float().numpy()
    array = np.asarray(values)
    if array.dtype == object:
        raise ValueError(f"{name} must be numeric, got an object array")
    return array


def _check_scores(scores: np.ndarray, name: str) -> np.ndarray:
    scores = scores.astype(np.float64, copy=False)
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return scores


def _binary_labels(labels: np.ndarray, name: str) -> np.ndarray:
    if labels.dtype == bool:
        return labels
    if not np.all(np.isin(labels, (0, 1))):
        raise ValueError(f"{name} must contain only 0 and 1 (or booleans), got values {np.unique(labels)[:5]}")
    return labels.astype(bool)


def _undefined(metric: str, reason: str) -> float:
    warnings.warn(f"{metric} undefined: {reason}; returning NaN", RuntimeWarning, stacklevel=3)
    return float("nan")


def _roc_and_ap(scores: np.ndarray, labels: np.ndarray, prefix: str, what: str) -> dict[str, float]:
    if labels.all() or not labels.any():
        nan = _undefined(f"{prefix}_auroc and {prefix}_ap",
                         f"all {what} are {'anomalous' if labels.any() else 'normal'}")
        return {f"{prefix}_auroc": nan, f"{prefix}_ap": nan}
    return {f"{prefix}_auroc": float(roc_auc_score(labels, scores)),
            f"{prefix}_ap": float(average_precision_score(labels, scores))}


def image_metrics(scores: Any, labels: Any) -> dict[str, float]:
    """Image-level AUROC and average precision: scores (N,) higher = more anomalous, labels (N,) in {0, 1}."""
    scores = _check_scores(_as_numpy(scores, "scores").reshape(-1), "scores")
    labels = _binary_labels(_as_numpy(labels, "labels").reshape(-1), "labels")
    if scores.shape != labels.shape:
        raise ValueError(f"scores has {scores.size} values but labels has {labels.size}")
    return _roc_and_ap(scores, labels, "image", "images")


def _maps_and_masks(maps: Any, masks: Any) -> tuple[np.ndarray, np.ndarray]:
    maps = _as_numpy(maps, "maps")
    masks = _as_numpy(masks, "masks")
    if maps.ndim != 3:
        raise ValueError(f"maps must have shape (N, H, W), got {maps.shape}")
    if maps.shape != masks.shape:
        raise ValueError(f"maps {maps.shape} and masks {masks.shape} must have the same shape (N, H, W)")
    return _check_scores(maps, "maps"), _binary_labels(masks, "masks")


def pixel_metrics(maps: Any, masks: Any) -> dict[str, float]:
    """Pixel-level AUROC and average precision over all pixels of all images: maps and masks (N, H, W)."""
    maps, masks = _maps_and_masks(maps, masks)
    return _roc_and_ap(maps.reshape(-1), masks.reshape(-1), "pixel", "pixels")


def _pro_curve(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, PRO) at every distinct threshold, from (0, 0) to (1, 1), in one sort of all pixels.

    Lowering the threshold past a pixel adds 1/#normal-pixels to the FPR if it is normal, or
    1/(#regions * region size) to the mean per-region overlap if it lies in a defect region (every connected
    region of every image weighs the same, as in the MVTec AD benchmark).
    """
    pro_step = np.zeros(masks.shape, dtype=np.float64)
    region_count = 0
    for i in range(masks.shape[0]):
        regions, count = ndimage.label(masks[i], structure=_REGION_STRUCTURE)
        if count == 0:
            continue
        sizes = np.bincount(regions.ravel()).astype(np.float64)
        sizes[0] = np.inf  # background pixels add nothing
        pro_step[i] = 1.0 / sizes[regions]
        region_count += count
    order = np.argsort(maps.ravel(), kind="stable")[::-1]  # descending score
    sorted_scores = maps.ravel()[order]
    fprs = np.cumsum(~masks.ravel()[order]) / np.count_nonzero(~masks)
    pros = np.cumsum(pro_step.ravel()[order]) / region_count
    last_of_tie = np.append(sorted_scores[1:] != sorted_scores[:-1], True)  # one point per distinct threshold
    fprs = np.clip(fprs[last_of_tie], 0.0, 1.0)
    pros = np.clip(pros[last_of_tie], 0.0, 1.0)
    return np.concatenate(([0.0], fprs, [1.0])), np.concatenate(([0.0], pros, [1.0]))


def area_under_curve(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoidal area under y(x) for x in [0, x_max] (x non-decreasing), interpolating y linearly at x_max."""
    upto = np.searchsorted(x, x_max, side="right")  # x[:upto] <= x_max
    xs, ys = x[:upto], y[:upto]
    area = float(np.sum(0.5 * (ys[1:] + ys[:-1]) * np.diff(xs)))
    if upto < len(x) and xs[-1] < x_max:
        y_at = ys[-1] + (y[upto] - ys[-1]) * (x_max - xs[-1]) / (x[upto] - xs[-1])
        area += 0.5 * (ys[-1] + y_at) * (x_max - xs[-1])
    return area


def aupro(maps: Any, masks: Any, max_fpr: float = 0.3) -> float:
    """Area under the per-region-overlap curve for false-positive rates up to max_fpr, divided by max_fpr.

    maps (N, H, W) anomaly scores, masks (N, H, W) binary. Regions are 8-connected components of each mask.
    NaN with a warning when there is no anomalous or no normal pixel.
    """
    if not 0.0 < max_fpr <= 1.0:
        raise ValueError(f"max_fpr must lie in (0, 1], got {max_fpr!r}")
    maps, masks = _maps_and_masks(maps, masks)
    if not masks.any():
        return _undefined("aupro", "no anomalous pixels")
    if masks.all():
        return _undefined("aupro", "no normal pixels")
    fprs, pros = _pro_curve(maps, masks)
    return float(np.clip(area_under_curve(fprs, pros, max_fpr) / max_fpr, 0.0, 1.0))


def center_crop(t: Any, size: int | None) -> Any:
    """The central size x size window of the last two dimensions (tensor or array); None returns t unchanged.

    Used to reproduce the reference's 256 -> 224 crop before pixel metrics.
    """
    if size is None:
        return t
    height, width = t.shape[-2:]
    if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= min(height, width):
        raise ValueError(f"center_crop size must be an integer in (0, {min(height, width)}], got {size!r}")
    top, left = (height - size) // 2, (width - size) // 2
    return t[..., top:top + size, left:left + size]
