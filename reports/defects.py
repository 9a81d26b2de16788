"""Per-defect-type breakdown: image AUROC and pixel AP of each (condition, category, defect type), with intervals.

A category's AUROC mixes its defect kinds; a model blind to dark holes can still score 90 when cracks are easy.
Here each defect type (the test folder name) is scored against *all* normal test images of its category, from
the trials' evaluation records (`EvaluationRecords.by_defect`, full-map values), as mean ± std over seeds with a
95% bootstrap interval over that type's images, the normal images and the seeds (`reports.intervals`).
Trials that saved no records have no breakdown; records of format 1 have image AUROC only.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dsr.evaluation.records import EvaluationRecords
from reports.spec import MISSING
from reports.tables import StudyTable, _select

DEFECT_METRICS: tuple[str, ...] = ("image_auroc", "pixel_ap")


def defect_breakdown(table: StudyTable, records: dict[str, EvaluationRecords] | None = None) -> pd.DataFrame:
    """One row per (condition, category, defect type) that has records: `{m}`, `{m}_std`, `{m}_n_seeds`,
    `{m}_ci_low`, `{m}_ci_high` per metric of DEFECT_METRICS (percent), plus the condition columns and `label`.

    records: trial_id -> records (default: read from the trials' folders).
    """
    from reports.intervals import attach_records

    done = table.done_trials
    columns = [*table.conditions, "label", "category", "defect",
               *[f"{m}{s}" for m in DEFECT_METRICS for s in ("", "_std", "_n_seeds", "_ci_low", "_ci_high")]]
    if done is None or done.empty:
        return pd.DataFrame(columns=columns)
    if records is None:
        records = attach_records(done)
    rows: list[dict[str, Any]] = []
    for _, condition in table.summary.iterrows():
        key = {c: condition[c] for c in table.conditions}
        trials = _select(done, key)
        for category in table.categories:
            found = [(int(t.seed), t.trial_id, records[t.trial_id]) for t in trials.itertuples(index=False)
                     if t.category == category and t.trial_id in records]
            if not found:
                continue
            defects = sorted({d for _, _, r in found for d in r.by_defect()})
            for defect in defects:
                row: dict[str, Any] = {**key, "label": condition["label"], "category": category, "defect": defect}
                row.update(_cell(found, category, defect))
                rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def _cell(found: list[tuple[int, str, EvaluationRecords]], category: str, defect: str) -> dict[str, float]:
    """Mean, std, seed count and interval of each metric for one (condition, category, defect)."""
    from reports.intervals import cell_interval

    present = [(seed, trial, r) for seed, trial, r in found if defect in r.by_defect()]
    out: dict[str, float] = {}
    subsets = {trial: r.of_defect(defect) for _, trial, r in present}
    frame = pd.DataFrame({"trial_id": [t for _, t, _ in present], "category": category,
                          "seed": [s for s, _, _ in present]})
    for metric in DEFECT_METRICS:
        values = np.array([r.by_defect()[defect][metric] for _, _, r in present], dtype=float) * 100.0
        values = values[~np.isnan(values)]
        mean = float(values.mean()) if len(values) else math.nan
        out[metric] = mean
        out[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        out[f"{metric}_n_seeds"] = int(len(values))
        interval = None
        if len(values) == len(present) and not math.isnan(mean):
            interval = cell_interval(frame, subsets, (category,), metric, mean)
        out[f"{metric}_ci_low"] = interval.low if interval else math.nan
        out[f"{metric}_ci_high"] = interval.high if interval else math.nan
    return out


def defect_display(breakdown: pd.DataFrame, table: StudyTable, metric: str) -> pd.DataFrame:
    """(category, defect) rows x condition columns of one metric: "mean ± std [low, high]" strings."""
    from reports.render import format_interval, format_value

    labels = list(table.summary["label"])
    pairs = breakdown[["category", "defect"]].drop_duplicates().itertuples(index=False)
    rows = []
    for category, defect in pairs:
        cells = breakdown[(breakdown["category"] == category) & (breakdown["defect"] == defect)]
        cells = cells.set_index("label").reindex(labels)
        row = [category, defect]
        for _, r in cells.iterrows():
            value = format_value(r[metric], r[f"{metric}_std"])
            interval = format_interval(r[f"{metric}_ci_low"], r[f"{metric}_ci_high"])
            row.append(value if value == MISSING or interval == MISSING else f"{value} {interval}")
        rows.append(row)
    return pd.DataFrame(rows, columns=["category", "defect type", *labels])


def defect_numbers(breakdown: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The numbers behind defect_display, long form (for the CSV): keys, then this metric's columns."""
    keep = [c for c in breakdown.columns if c == metric or c.startswith(metric + "_")
            or not any(c.startswith(m) for m in DEFECT_METRICS)]
    return breakdown[keep].reset_index(drop=True)


def write_defects(table: StudyTable, folder: Path, records: dict[str, EvaluationRecords] | None = None
                  ) -> tuple[pd.DataFrame, dict[str, dict[str, Any]]]:
    """Write `<name>-per_defect-<metric>.{md,tex,csv}` for every metric; returns the breakdown and the paths
    by metric (empty when no trial saved records)."""
    from reports.render import table_title, write_table

    breakdown = defect_breakdown(table, records)
    if breakdown.empty:
        return breakdown, {}
    written = {}
    for metric in DEFECT_METRICS:
        title = f"{table_title(table)}, per defect type: {METRIC_TITLES[metric]}"
        written[metric] = write_table(defect_display(breakdown, table, metric), defect_numbers(breakdown, metric),
                                      folder / f"{table.name}-per_defect-{metric}", title, [DEFECT_NOTE])
    return breakdown, written


METRIC_TITLES = {"image_auroc": "image AUROC", "pixel_ap": "pixel AP"}
DEFECT_NOTE = ("Each defect type against all normal test images of its category; mean ± std over seeds "
               "[95% bootstrap interval over that type's images, the normal images and the seeds].")
