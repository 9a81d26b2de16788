"""95% confidence intervals from the trials' per-image records: bootstrap over test images (and seeds).

A cell of a table is the mean over seeds of the mean over categories of a metric. Its interval resamples, with
`scipy.stats.bootstrap`, the test images of every category (normal and anomalous images separately, so each
resample keeps both classes) and, when there are several, the seeds. A comparison against the study's baseline
resamples the *same* images and seeds for both (a paired bootstrap) and calls the difference significant when
its interval excludes 0.

Pixel AP is resampled on each image's stored pixel subsample, whose anomalous fraction is higher than the full
map's; so every interval is centred on the full-data value: [value + q2.5 - s, value + q97.5 - s], where s is the
statistic on the subsample and q the bootstrap quantiles (for image AUROC s equals the value).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from dsr.evaluation.records import RECORDS_FILE, EvaluationRecords, load_records
CONFIDENCE = 0.95
RESAMPLES = {"image_auroc": 1000, "image_ap": 1000, "pixel_ap": 200, "pixel_auroc": 200}
IMAGE_METRICS = ("image_auroc", "image_ap")
PIXEL_METRICS = ("pixel_auroc", "pixel_ap")
SUPPORTED = IMAGE_METRICS + PIXEL_METRICS


@dataclass(frozen=True)
class Interval:
    low: float  # percent
    high: float

    def excludes_zero(self) -> bool:
        return self.low > 0.0 or self.high < 0.0


def find_records(trial_path: str | Path | None) -> Path | None:
    """The records.npz of a trial's newest checkpoint, or None (older runs, unfinished trials)."""
    if trial_path is None or (isinstance(trial_path, float) and math.isnan(trial_path)):
        return None
    found = sorted(Path(trial_path).glob(f"checkpoint_*/{RECORDS_FILE}"))
    return found[-1] if found else None


def attach_records(done: pd.DataFrame) -> dict[str, EvaluationRecords]:
    """trial_id -> records for every done trial that saved them (unreadable files are skipped)."""
    out = {}
    for row in done.itertuples(index=False):
        path = find_records(row.path)
        if path is None:
            continue
        try:
            out[row.trial_id] = load_records(path)
        except ValueError:
            continue
    return out


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) identity, ties counted half, as scikit-learn."""
    positives = labels.astype(bool)
    n_pos, n_neg = positives.sum(), (~positives).sum()
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = stats.rankdata(scores)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Average precision with tied scores grouped, as scikit-learn's average_precision_score."""
    labels = labels.astype(bool)
    if not labels.any():
        return math.nan
    order = np.argsort(-scores, kind="stable")
    sorted_scores, hits = scores[order], labels[order]
    last_of_tie = np.r_[np.diff(sorted_scores) != 0, True]
    true_positives = np.cumsum(hits)[last_of_tie]
    predicted = (np.arange(1, len(hits) + 1))[last_of_tie]
    recall_steps = np.diff(np.r_[0, true_positives]) / labels.sum()
    return float((recall_steps * true_positives / predicted).sum())


@dataclass(frozen=True)
class SortedPixels:
    """One records' pixel subsample sorted once by descending score, so a resample's pixel AP needs no sort."""

    image_of: np.ndarray  # (M,) the image each sorted pixel belongs to
    hits: np.ndarray  # (M,) bool: the pixel is anomalous
    last_of_tie: np.ndarray  # (M,) bool: the last pixel of a run of equal scores (a threshold)

    @classmethod
    def of(cls, records: EvaluationRecords) -> "SortedPixels":
        scores = records.pixel_scores.astype(np.float32).ravel()
        order = np.argsort(-scores, kind="stable")
        image_of = np.repeat(np.arange(len(records)), records.pixel_scores.shape[1])[order]
        return cls(image_of, records.pixel_labels.ravel()[order], np.r_[np.diff(scores[order]) != 0, True])


def resampled_average_precision(pixels: SortedPixels, images: np.ndarray, n_images: int) -> float:
    """Pixel AP of the images drawn (with repeats) = AP of their pixels, each weighted by its image's count.

    Equal to `average_precision` on the concatenated pixels of `images`, in O(pixels) without sorting.
    """
    weights = np.bincount(images, minlength=n_images)[pixels.image_of]
    true_positives = np.cumsum(weights * pixels.hits)[pixels.last_of_tie]
    predicted = np.cumsum(weights)[pixels.last_of_tie]
    if true_positives[-1] == 0:
        return math.nan
    recall_steps = np.diff(np.r_[0, true_positives]) / true_positives[-1]
    precision = np.divide(true_positives, predicted, out=np.zeros(len(predicted)), where=predicted > 0)
    return float((recall_steps * precision).sum())


def _metric(records: EvaluationRecords, metric: str, images: np.ndarray,
            pixels: SortedPixels | None = None) -> float:
    if metric in IMAGE_METRICS:
        scores, labels = records.image_scores[images], records.labels[images]
        return auroc(scores, labels) if metric == "image_auroc" else average_precision(scores, labels)
    if not records.has_masks:
        return math.nan
    if metric == "pixel_ap" and pixels is not None:
        return resampled_average_precision(pixels, images, len(records))
    scores = records.pixel_scores[images].astype(np.float32).ravel()
    labels = records.pixel_labels[images].ravel()
    return auroc(scores, labels) if metric == "pixel_auroc" else average_precision(scores, labels)


class _Cell:
    """Records of one condition laid out as (category, seed), and the index samples the bootstrap resamples."""

    def __init__(self, records: dict[tuple[str, int], EvaluationRecords], categories: tuple[str, ...],
                 seeds: tuple[int, ...]) -> None:
        self.records, self.categories, self.seeds = records, categories, seeds
        self.pixels: dict[tuple[str, int], SortedPixels] = {}  # sorted once, on first use by pixel AP
        self.strata: list[np.ndarray] = []  # per category: normal indices, anomalous indices
        for category in categories:
            labels = records[(category, seeds[0])].labels
            self.strata += [np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)]

    def statistic(self, metric: str, seed_positions: np.ndarray, strata: list[np.ndarray]) -> float:
        values = []
        for s in np.asarray(seed_positions, dtype=int):
            per_category = [_metric(self.records[(c, self.seeds[s])], metric,
                                    np.concatenate([strata[2 * i], strata[2 * i + 1]]),
                                    self._pixels((c, self.seeds[s])) if metric == "pixel_ap" else None)
                            for i, c in enumerate(self.categories)]
            values.append(np.mean(per_category))
        return float(np.mean(values))


    def _pixels(self, key: tuple[str, int]) -> SortedPixels | None:
        if not self.records[key].has_masks:
            return None
        if key not in self.pixels:
            self.pixels[key] = SortedPixels.of(self.records[key])
        return self.pixels[key]


def _layout(frame: pd.DataFrame, records: dict[str, EvaluationRecords], categories: tuple[str, ...]
            ) -> dict[tuple[str, int], EvaluationRecords] | None:
    """(category, seed) -> records of the complete seeds of a condition, or None if no seed is complete."""
    cells = {(str(r.category), int(r.seed)): records[r.trial_id] for r in frame.itertuples(index=False)
             if r.trial_id in records}
    seeds = sorted({s for _, s in cells})
    complete = [s for s in seeds if all((c, s) in cells for c in categories)]
    if not complete:
        return None
    return {(c, s): cells[(c, s)] for c in categories for s in complete}


def cell_interval(frame: pd.DataFrame, records: dict[str, EvaluationRecords], categories: tuple[str, ...],
                  metric: str, value: float, baseline: pd.DataFrame | None = None, seed: int = 0
                  ) -> Interval | None:
    """95% interval (percent) of one table cell, or of its difference to `baseline` when given (paired).

    `value` is the cell's full-data value in percent (the difference of the two values for a comparison).
    None where the trials saved no records, or the metric is not defined (no masks).
    """
    if metric not in SUPPORTED:
        return None
    layout = _layout(frame, records, categories)
    base_layout = _layout(baseline, records, categories) if baseline is not None else None
    if layout is None or (baseline is not None and base_layout is None):
        return None
    seeds = tuple(sorted({s for _, s in layout}))
    if base_layout is not None:
        seeds = tuple(s for s in seeds if any(key[1] == s for key in base_layout))
        if not seeds:
            return None
    cell = _Cell(layout, categories, seeds)
    base = _Cell(base_layout, categories, seeds) if base_layout is not None else None
    if any(len(stratum) < 2 for stratum in cell.strata):
        return None  # a class with fewer than two test images: nothing to resample
    if base is not None and any(len(cell.records[(c, seeds[0])]) != len(base.records[(c, seeds[0])])
                                for c in categories):
        return None  # not the same test images: no paired comparison

    def statistic(seed_positions, *strata):
        ours = cell.statistic(metric, seed_positions, list(strata))
        return ours - base.statistic(metric, seed_positions, list(strata)) if base is not None else ours

    seed_positions = np.arange(len(seeds))
    observed = statistic(seed_positions, *cell.strata)
    if math.isnan(observed) or math.isnan(value):
        return None
    if len(seeds) == 1:  # nothing to resample over seeds: keep the one seed in every resample
        data, stat = tuple(cell.strata), (lambda *strata: statistic(seed_positions, *strata))
    else:
        data, stat = (seed_positions, *cell.strata), statistic
    result = stats.bootstrap(data, stat, n_resamples=RESAMPLES[metric], confidence_level=CONFIDENCE,
                             method="percentile", vectorized=False, paired=False,
                             random_state=np.random.default_rng(seed))
    low, high = result.confidence_interval
    if math.isnan(low) or math.isnan(high):
        return None
    shift = value - observed * 100.0
    low, high = low * 100.0 + shift, high * 100.0 + shift
    if base is None:  # a metric lies in [0, 100]; a difference in [-100, 100]
        low, high = max(low, 0.0), min(high, 100.0)
    return Interval(low, high)
