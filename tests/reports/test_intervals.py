"""Bootstrap intervals from per-image records: metrics equal scikit-learn's, intervals hold the value, and a
paired comparison tells a real difference from none."""

import zlib

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from dsr.evaluation.records import EvaluationRecords
from reports.intervals import auroc, average_precision, cell_interval

CATEGORIES = ("a", "b")


def _records(separation: float, seed: int, n: int = 30) -> EvaluationRecords:
    rng = np.random.default_rng(seed)
    labels = np.array([0] * (n // 2) + [1] * (n - n // 2), dtype=np.int8)
    scores = rng.normal(size=n) + separation * labels
    pixel_labels = np.zeros((n, 64), bool)
    pixel_labels[labels == 1, :8] = True
    pixel_scores = rng.random((n, 64)) + separation * 0.2 * pixel_labels
    thumbs = np.zeros((n, 4, 4), np.uint8)
    return EvaluationRecords(np.array([f"x/{i}.png" for i in range(n)]), np.array(["good"] * n), labels,
                             scores.astype(np.float32), pixel_scores.astype(np.float16), pixel_labels, True, 0,
                             np.zeros((n, 4, 4, 3), np.uint8), thumbs, thumbs)


def _condition(name: str, separation: float, seeds=(0,)) -> tuple[pd.DataFrame, dict]:
    rows, records = [], {}
    for category in CATEGORIES:
        for seed in seeds:
            trial_id = f"{name}-{category}-{seed}"
            rows.append({"trial_id": trial_id, "category": category, "seed": seed})
            # the same test images (same generator per category) whatever the condition: a paired design
            base = _records(0.0, zlib.crc32(category.encode()))
            shifted = _records(separation, zlib.crc32(category.encode()))
            records[trial_id] = shifted if separation else base
            records[trial_id].image_scores = (base.image_scores + separation * base.labels
                                              + 0.01 * seed).astype(np.float32)
    return pd.DataFrame(rows), records


def _value(frame: pd.DataFrame, records: dict, metric: str = "image_auroc") -> float:
    return 100 * np.mean([roc_auc_score(records[t].labels, records[t].image_scores) for t in frame["trial_id"]])


def test_rank_auroc_and_ap_equal_scikit_learn_with_ties() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 200).astype(float)  # many ties
    labels = rng.random(200) < 0.3
    assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert average_precision(scores, labels) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)


@pytest.mark.parametrize("seeds", [(0,), (0, 1, 2)])
def test_interval_holds_the_cell_value(seeds) -> None:
    frame, records = _condition("v", 1.0, seeds)
    value = _value(frame, records)
    interval = cell_interval(frame, records, CATEGORIES, "image_auroc", value)
    assert interval is not None and interval.low <= value <= interval.high
    assert interval.high - interval.low > 1.0  # 30 test images cannot pin AUROC to a point


def test_paired_difference_is_zero_for_equal_scores_and_significant_for_a_clear_gain() -> None:
    base, base_records = _condition("base", 0.0)
    same, same_records = _condition("same", 0.0)
    better, better_records = _condition("better", 3.0)
    records = {**base_records, **same_records, **better_records}
    none = cell_interval(same, records, CATEGORIES, "image_auroc", 0.0, baseline=base)
    assert none is not None and none.low == pytest.approx(0.0) and none.high == pytest.approx(0.0)
    assert not none.excludes_zero()
    gain = _value(better, records) - _value(base, records)
    clear = cell_interval(better, records, CATEGORIES, "image_auroc", gain, baseline=base)
    assert clear is not None and clear.low > 0 and clear.excludes_zero()


def test_no_records_or_no_masks_gives_no_interval() -> None:
    frame, records = _condition("v", 1.0)
    assert cell_interval(frame, {}, CATEGORIES, "image_auroc", 90.0) is None
    for record in records.values():
        record.has_masks = False
    assert cell_interval(frame, records, CATEGORIES, "pixel_ap", float("nan")) is None


def test_resampled_pixel_ap_equals_the_ap_of_the_drawn_pixels() -> None:
    from reports.intervals import SortedPixels, resampled_average_precision

    records = _records(1.0, 3)
    records.pixel_scores = np.round(records.pixel_scores.astype(np.float32), 1).astype(np.float16)  # many ties
    pixels = SortedPixels.of(records)
    rng = np.random.default_rng(1)
    for _ in range(5):
        images = rng.integers(0, len(records), len(records))  # with repeats, some images absent
        scores = records.pixel_scores[images].astype(np.float32).ravel()
        labels = records.pixel_labels[images].ravel()
        assert resampled_average_precision(pixels, images, len(records)) == pytest.approx(
            average_precision_score(labels, scores), abs=1e-12)
