"""Aggregate: the per-trial DataFrame -> one StudyTable per (study, dataset, preset), numbers in percent.

How a cell is computed (the paper reports the mean over categories): for each seed whose every category has a
result, take the mean over categories; the cell is the mean of those per-seed means, ± their sample standard
deviation (ddof=1) when there are two or more. A seed with a category missing is left out (counted in
`{metric}_n_seeds`), and a cell with no complete seed is NaN: nothing is filled in or guessed.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from reports.paper import paper_curve, paper_value
from reports.spec import DEFAULT_SAMPLING_STRATEGY, STUDY_ORDER, VARIANTS, StudySpec, study_spec

NOT_DONE = ("failed", "running", "pending", "paused", "incomplete")


@dataclass(frozen=True)
class MissingCount:
    """How many (condition, category, seed) trials of a table have no final result, and why."""

    expected: int
    done: int
    by_reason: dict[str, int] = field(default_factory=dict)  # status -> count, plus "never started"

    @property
    def missing(self) -> int:
        return self.expected - self.done

    def sentence(self) -> str:
        """One line for the report, e.g. "2 of 12 trials missing (1 failed, 1 never started)."."""
        if self.missing == 0:
            return f"All {self.expected} trials done."
        reasons = ", ".join(f"{n} {reason}" for reason, n in self.by_reason.items() if n)
        return f"{self.missing} of {self.expected} trials missing ({reasons})."


@dataclass(frozen=True)
class StudyTable:
    """One study's aggregated results.

    summary: one row per condition (in canonical order) with the condition columns, `label`, and per metric
    `{m}`, `{m}_std`, `{m}_n_seeds`, `{m}_paper`, `{m}_delta`, plus `n_seeds_expected`, `n_trials_done`,
    `n_trials_expected`. per_category: one row per (condition, category) with `{m}`, `{m}_std`, `{m}_n_seeds`.
    All metric values are percent.
    """

    spec: StudySpec
    dataset: str
    preset: str
    name: str
    conditions: tuple[str, ...]
    categories: tuple[str, ...]
    seeds: tuple[int, ...]
    summary: pd.DataFrame
    per_category: pd.DataFrame
    missing: MissingCount
    baseline: str  # label of the condition every other is compared with (paired bootstrap)
    duplicates_dropped: int  # trials of an already-filled cell (a rerun): the latest finished one is kept
    unplaced: int  # trials whose condition is unknown (e.g. a preset without a default K): left out
    paper_curve: pd.DataFrame | None  # the paper's sweep (lambda_s, value) for the wide tables, else None
    done_trials: pd.DataFrame | None = None  # the finished trials behind the cells (condition columns included)

    @property
    def has_paper(self) -> bool:
        return any(self.summary[f"{m}_paper"].notna().any() for m in self.spec.metrics)


def build_tables(trials: pd.DataFrame) -> list[StudyTable]:
    """One StudyTable per (study, dataset, preset) present in `trials` (the output of load_experiment)."""
    usable = trials[trials["study"].notna() & trials["category"].notna() & trials["seed"].notna()]
    keys = usable[["study", "dataset", "preset"]].drop_duplicates().itertuples(index=False)
    order = sorted(keys, key=lambda k: (_study_rank(k.study), k.study, k.dataset, k.preset))
    out = []
    for study, dataset, preset in order:
        group = usable[(usable["study"] == study) & (usable["dataset"] == dataset) & (usable["preset"] == preset)]
        out.append(study_table(group, study_spec(study), dataset, preset))
    return out


def malformed_count(trials: pd.DataFrame) -> int:
    """Trials that cannot be placed in a table (no category or seed in their config)."""
    return int((trials["category"].isna() | trials["seed"].isna()).sum())


def study_table(group: pd.DataFrame, spec: StudySpec, dataset: str, preset: str) -> StudyTable:
    """Aggregate the trials of one study/dataset/preset into a StudyTable."""
    group = group.copy()
    group["other_overrides"] = [_other_overrides(o, spec) for o in group["overrides"]]
    conditions = _condition_columns(group, spec)
    placed = group.dropna(subset=list(conditions))  # e.g. an unknown preset: no effective K, cannot be placed
    unplaced, group = len(group) - len(placed), placed
    cells = list(conditions) + ["category", "seed"]
    ranked = group.assign(_done=group["status"] == "done").sort_values(["_done", "timestamp"], na_position="first")
    unique = ranked.drop_duplicates(subset=cells, keep="last").drop(columns="_done")
    duplicates = len(group) - len(unique)

    categories = tuple(sorted(unique["category"].astype(str).unique()))
    seeds = tuple(int(s) for s in sorted(unique["seed"].unique()))
    condition_rows = _ordered_conditions(unique, conditions)
    done = unique[unique["status"] == "done"]
    n_expected = len(categories) * len(seeds)

    summary_rows, category_rows = [], []
    for values in condition_rows.itertuples(index=False):
        key = dict(zip(conditions, values))
        sub, trials_in_cond = _select(done, key), _select(unique, key)
        row: dict[str, Any] = {**key, "label": condition_label(key)}
        variant = key.get("variant", _unique(trials_in_cond["variant"]))
        lambda_s = key.get("lambda_s", _unique(trials_in_cond["lambda_s"]))
        for metric in spec.metrics:
            mean, std, n = _seed_aggregate(sub, metric, categories)
            paper = (paper_value(spec.paper_table, metric, variant, lambda_s)
                     if spec.paper_table is not None else math.nan)
            row.update({metric: mean, f"{metric}_std": std, f"{metric}_n_seeds": n,
                        f"{metric}_paper": paper, f"{metric}_delta": mean - paper,
                        f"{metric}_no_masks": _without_masks(sub, metric)})
        row.update(n_seeds_expected=len(seeds), n_trials_done=len(sub), n_trials_expected=n_expected)
        summary_rows.append(row)
        for category in categories:
            values_c = sub[sub["category"] == category]
            crow: dict[str, Any] = {**key, "label": row["label"], "category": category}
            for metric in spec.metrics:
                v = values_c[metric].dropna() * 100.0
                crow.update({metric: v.mean() if len(v) else math.nan,
                             f"{metric}_std": v.std(ddof=1) if len(v) > 1 else math.nan,
                             f"{metric}_n_seeds": len(v)})
            crow["n_seeds_expected"] = len(seeds)
            category_rows.append(crow)

    metric_columns = [f"{m}{suffix}" for m in spec.metrics for suffix in ("", "_std", "_n_seeds")]
    summary = pd.DataFrame(summary_rows, columns=[
        *conditions, "label", *[f"{m}{suffix}" for m in spec.metrics
                                for suffix in ("", "_std", "_n_seeds", "_paper", "_delta", "_no_masks")],
        "n_seeds_expected", "n_trials_done", "n_trials_expected"])
    per_category = pd.DataFrame(category_rows, columns=[*conditions, "label", "category", *metric_columns,
                                                        "n_seeds_expected"])
    missing = _missing(unique, len(condition_rows) * n_expected)
    baseline = add_intervals(summary, done, conditions, categories, spec.metrics)
    curve = None
    if spec.layout == "wide" and spec.paper_table is not None:
        curve = paper_curve(spec.paper_table, spec.metrics[0], _unique(unique["variant"]) or "DSR")
    name = "-".join(_slug(part) for part in (spec.stem, dataset, preset))
    return StudyTable(spec, dataset, preset, name, tuple(conditions), categories, seeds, summary, per_category,
                      missing, baseline, duplicates, unplaced, curve, done_trials=done)


def baseline_label(summary: pd.DataFrame) -> str:
    """The condition others are compared with: the paper's DSR (variant DSR, lambda_s 0.05) where present."""
    if summary.empty:
        return ""
    preferred = pd.Series(True, index=summary.index)
    if "variant" in summary:
        preferred &= summary["variant"] == "DSR"
    if "lambda_s" in summary:
        preferred &= summary["lambda_s"].astype(float).round(6) == 0.05
    rows = summary[preferred] if preferred.any() else summary
    return str(rows["label"].iloc[0])


def add_intervals(summary: pd.DataFrame, done: pd.DataFrame, conditions: tuple[str, ...],
                  categories: tuple[str, ...], metrics: tuple[str, ...]) -> str:
    """Add 95% intervals to `summary` in place (`{m}_ci_low/high`; `{m}_vs_base`, `_low`, `_high`, `_sig` for
    the paired difference to the baseline condition) from the trials' records; returns the baseline's label."""
    from reports.intervals import attach_records, cell_interval

    base = baseline_label(summary)
    records = attach_records(done)
    base_key = summary[summary["label"] == base].iloc[0] if base else None
    base_frame = _select(done, {c: base_key[c] for c in conditions}) if base_key is not None else None
    for metric in metrics:
        columns = {f"{metric}_{suffix}": [] for suffix in ("ci_low", "ci_high", "vs_base", "vs_base_low",
                                                           "vs_base_high", "vs_base_sig")}
        for _, row in summary.iterrows():
            frame = _select(done, {c: row[c] for c in conditions})
            cell = cell_interval(frame, records, categories, metric, row[metric]) if records else None
            diff_value = row[metric] - base_key[metric] if base_key is not None else math.nan
            diff = (cell_interval(frame, records, categories, metric, diff_value, baseline=base_frame)
                    if records and base_key is not None and row["label"] != base else None)
            columns[f"{metric}_ci_low"].append(cell.low if cell else math.nan)
            columns[f"{metric}_ci_high"].append(cell.high if cell else math.nan)
            columns[f"{metric}_vs_base"].append(diff_value if diff else math.nan)
            columns[f"{metric}_vs_base_low"].append(diff.low if diff else math.nan)
            columns[f"{metric}_vs_base_high"].append(diff.high if diff else math.nan)
            columns[f"{metric}_vs_base_sig"].append(diff.excludes_zero() if diff else None)
        for name, values in columns.items():
            summary[name] = values
    return base


def category_matrix(table: StudyTable, metric: str) -> pd.DataFrame:
    """Categories (sorted) x condition labels (canonical order) of one metric's per-seed mean, percent; NaN missing."""
    frame = table.per_category.pivot(index="category", columns="label", values=metric)
    return frame.reindex(index=list(table.categories), columns=list(table.summary["label"]))


def condition_label(key: dict[str, Any]) -> str:
    """The display label of one condition, e.g. "0.05", "DSR_img", "DSR_U- · 0.2"."""
    return " · ".join(format_condition(column, value) for column, value in key.items())


def format_condition(column: str, value: Any) -> str:
    if column == "lambda_s":
        return f"{float(value):g}"
    if column == "codebook_size":
        return str(int(value))
    return str(value)


def _select(frame: pd.DataFrame, key: dict[str, Any]) -> pd.DataFrame:
    """The rows of one condition."""
    mask = pd.Series(True, index=frame.index)
    for column, value in key.items():
        mask &= frame[column] == value
    return frame[mask]


def _seed_aggregate(done: pd.DataFrame, metric: str, categories: tuple[str, ...]) -> tuple[float, float, int]:
    """Mean and sample std over complete seeds of the per-seed category mean (percent), and how many seeds."""
    values = done.dropna(subset=[metric])
    if values.empty:
        return math.nan, math.nan, 0
    table = values.pivot(index="seed", columns="category", values=metric).reindex(columns=list(categories))
    complete = table.dropna(axis=0, how="any")
    per_seed = complete.mean(axis=1) * 100.0
    n = len(per_seed)
    if n == 0:
        return math.nan, math.nan, 0
    return float(per_seed.mean()), float(per_seed.std(ddof=1)) if n > 1 else math.nan, n


def _without_masks(done: pd.DataFrame, metric: str) -> bool:
    """True when a pixel metric is undefined because every finished trial's data had no pixel masks."""
    if not metric.startswith("pixel") and metric != "aupro":
        return False
    flags = done["has_masks"].dropna() if "has_masks" in done else pd.Series(dtype=float)
    return bool(len(flags)) and bool((flags == 0).all())


def _missing(unique: pd.DataFrame, expected: int) -> MissingCount:
    done = int((unique["status"] == "done").sum())
    counts = unique.loc[unique["status"] != "done", "status"].value_counts()
    reasons = {status: int(counts.get(status, 0)) for status in NOT_DONE}
    for status, n in counts.items():  # any status Tune may add later
        reasons.setdefault(str(status), int(n))
    reasons["never started"] = expected - len(unique)
    return MissingCount(expected=expected, done=done, by_reason=reasons)


def _condition_columns(group: pd.DataFrame, spec: StudySpec) -> tuple[str, ...]:
    """The study's condition column, preceded by any other setting that splits it (variant, other overrides)."""
    extras = []
    if spec.condition != "params":
        for column in ("variant", "other_overrides"):
            if column != spec.condition and group.groupby(spec.condition)[column].nunique().gt(1).any():
                extras.append(column)
    return (*extras, spec.condition)


def _other_overrides(overrides_json: str, spec: StudySpec) -> str:
    overrides = json.loads(overrides_json)
    rest = {k: v for k, v in overrides.items() if k not in spec.primary_fields}
    return ", ".join(f"{k}={rest[k]}" for k in sorted(rest)) or "none"


def _ordered_conditions(frame: pd.DataFrame, conditions: tuple[str, ...]) -> pd.DataFrame:
    """Distinct condition tuples in canonical order (variants as in the paper, numbers ascending)."""
    distinct = frame[list(conditions)].drop_duplicates()
    keys = [tuple(_sort_key(column, value) for column, value in zip(conditions, row))
            for row in distinct.itertuples(index=False)]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    return distinct.iloc[order].reset_index(drop=True)


def _sort_key(column: str, value: Any) -> tuple:
    if column == "variant":
        return (VARIANTS.index(value) if value in VARIANTS else len(VARIANTS), str(value))
    if column in ("lambda_s", "codebook_size"):
        return (0, float(value))
    if column == "sampling":
        return (0 if str(value).split("(")[0] == DEFAULT_SAMPLING_STRATEGY else 1, str(value))
    return (0, str(value))


def _study_rank(study: str) -> int:
    return STUDY_ORDER.index(study) if study in STUDY_ORDER else len(STUDY_ORDER)


def _unique(series: pd.Series) -> Any:
    values = series.dropna().unique()
    return values[0] if len(values) == 1 else None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", str(text)).strip("_") or "x"
