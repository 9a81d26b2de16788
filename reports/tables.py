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
    def stopped(self) -> int:
        """Trials a scheduler (ASHA) stopped early: by design, not missing."""
        return self.by_reason.get("stopped", 0)

    @property
    def missing(self) -> int:
        return self.expected - self.done - self.stopped

    def sentence(self) -> str:
        """One line for the report, e.g. "2 of 12 trials missing (1 failed, 1 never started)." or "1 of 6 trials
        done, 5 stopped early by the scheduler."."""
        stopped = (f"{self.done} of {self.expected} trials done, {self.stopped} stopped early by the scheduler"
                   if self.stopped else "")
        if self.missing == 0:
            return f"{stopped}." if stopped else f"All {self.expected} trials done."
        reasons = ", ".join(f"{n} {reason}" for reason, n in self.by_reason.items() if n and reason != "stopped")
        missing = f"{self.missing} of {self.expected} trials missing ({reasons})."
        return f"{stopped}; {missing}" if stopped else missing


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

    index = _condition_index(condition_rows, conditions)
    per_category = _per_category(done, conditions, categories, spec.metrics, index)
    summary = condition_rows.copy()
    summary["label"] = condition_labels([dict(zip(conditions, values))
                                         for values in condition_rows.itertuples(index=False)])
    variants = _per_condition(unique, conditions, "variant", index)
    lambdas = _per_condition(unique, conditions, "lambda_s", index)
    for metric in spec.metrics:
        aggregate = _seed_aggregate(done, conditions, metric, categories).reindex(index)
        summary[metric] = aggregate["mean"].to_numpy(float)
        summary[f"{metric}_std"] = aggregate["std"].to_numpy(float)
        summary[f"{metric}_n_seeds"] = aggregate["count"].fillna(0).astype(int).to_numpy()
        paper = [paper_value(spec.paper_table, metric, key.get("variant", variant), key.get("lambda_s", lam))
                 if spec.paper_table is not None else math.nan
                 for key, variant, lam in zip(summary[list(conditions)].to_dict("records"), variants, lambdas)]
        summary[f"{metric}_paper"] = paper
        summary[f"{metric}_delta"] = summary[metric] - summary[f"{metric}_paper"]
        summary[f"{metric}_no_masks"] = _without_masks(done, conditions, metric, index)
    if "lambda_s" not in conditions:  # the λs each condition ran with (the baseline is the paper's 0.05)
        summary["lambda_s"] = lambdas
    summary["n_seeds_expected"] = len(seeds)
    summary["n_trials_done"] = (done.groupby(list(conditions)).size().reindex(index).fillna(0).astype(int)
                                .to_numpy() if len(done) else 0)
    summary["n_trials_expected"] = n_expected
    per_category = per_category.merge(summary[[*conditions, "label"]], on=list(conditions), how="left")
    metric_columns = [f"{m}{suffix}" for m in spec.metrics for suffix in ("", "_std", "_n_seeds")]
    per_category = per_category.assign(n_seeds_expected=len(seeds)).reindex(
        columns=[*conditions, "label", "category", *metric_columns, "n_seeds_expected"])
    missing = _missing(unique, len(condition_rows) * n_expected)
    baseline = add_intervals(summary, done, conditions, categories, spec.metrics)
    curve = None
    if spec.layout == "wide" and spec.paper_table is not None:
        curve = paper_curve(spec.paper_table, spec.metrics[0], _unique(unique["variant"]) or "DSR")
    name = "-".join(_slug(part) for part in (spec.stem, dataset, preset))
    return StudyTable(spec, dataset, preset, name, tuple(conditions), categories, seeds, summary, per_category,
                      missing, baseline, duplicates, unplaced, curve, done_trials=done)


def baseline_label(summary: pd.DataFrame) -> str:
    """The condition others are compared with: the paper's DSR (variant DSR, the paper's sampling strategy,
    lambda_s 0.05) as far as present, each preference applied only if some condition meets it; else the first."""
    if summary.empty:
        return ""
    rows = summary
    preferences = [("variant", lambda c: c == "DSR"),
                   ("sampling", lambda c: c.astype(str) == DEFAULT_SAMPLING_STRATEGY),
                   ("lambda_s", lambda c: pd.to_numeric(c, errors="coerce").round(6) == 0.05)]
    for column, prefer in preferences:
        if column in rows and prefer(rows[column]).any():
            rows = rows[prefer(rows[column])]
        elif column == "lambda_s" and "sampling" in rows and column in rows and \
                pd.to_numeric(rows[column], errors="coerce").nunique() > 1:
            return ""  # a search drew λs and never ran the paper's 0.05: no condition is the paper's DSR
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
                                                           "vs_base_high", "vs_base_sig", "vs_base_fewer_seeds")}
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
            # a condition with fewer finished seeds than the baseline (a search's stopped repeats) rests on the
            # images of those seeds alone: its interval is shown but never called beyond the noise
            fewer = bool(diff) and int(row[f"{metric}_n_seeds"]) < int(base_key[f"{metric}_n_seeds"])
            columns[f"{metric}_vs_base_sig"].append((diff.excludes_zero() and not fewer) if diff else None)
            columns[f"{metric}_vs_base_fewer_seeds"].append(fewer)
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


def condition_labels(keys: list[dict[str, Any]]) -> list[str]:
    """The labels of distinct conditions, numbers rounded to 3 significant digits (`similarity_bound=0.148`), or
    to as many more as keep every label distinct."""
    for digits in (3, 4, 6, None):
        labels = [" · ".join(format_condition(c, v, digits) for c, v in key.items()) for key in keys]
        if len(set(labels)) == len(set(map(str, keys))):
            return labels
    return labels


def format_condition(column: str, value: Any, digits: int | None = 3) -> str:
    """A condition's value for display; numbers inside text (other overrides, sampling parameters) rounded to
    `digits` significant digits (None: as stored)."""
    if column == "lambda_s":
        return f"{float(value):g}"
    if column == "codebook_size":
        return str(int(value))
    return round_numbers(str(value), digits)


_FLOAT = re.compile(r"(?<![\w.])-?\d+\.\d+(?:[eE][-+]?\d+)?")


def round_numbers(text: str, digits: int | None = 3) -> str:
    """Every decimal number in `text` to `digits` significant digits: "λ=0.14822078559090424" -> "λ=0.148"."""
    if digits is None:
        return text
    return _FLOAT.sub(lambda match: f"{float(match.group()):.{digits}g}", text)


def _select(frame: pd.DataFrame, key: dict[str, Any]) -> pd.DataFrame:
    """The rows of one condition."""
    mask = pd.Series(True, index=frame.index)
    for column, value in key.items():
        mask &= frame[column] == value
    return frame[mask]


def _condition_index(condition_rows: pd.DataFrame, conditions: tuple[str, ...]) -> pd.Index:
    """The ordered conditions as the index a groupby over `conditions` produces (MultiIndex for several)."""
    if len(conditions) == 1:
        return pd.Index(condition_rows[conditions[0]], name=conditions[0])
    return pd.MultiIndex.from_frame(condition_rows[list(conditions)])


def _seed_aggregate(done: pd.DataFrame, conditions: tuple[str, ...], metric: str,
                    categories: tuple[str, ...]) -> pd.DataFrame:
    """Per condition: mean, sample std (ddof=1) and count over complete seeds of the per-seed category mean
    (percent). A seed with a category missing is left out."""
    values = done.dropna(subset=[metric])
    if values.empty:
        return pd.DataFrame(columns=["mean", "std", "count"], dtype=float)
    wide = values.pivot_table(index=[*conditions, "seed"], columns="category", values=metric, aggfunc="mean")
    complete = wide.reindex(columns=list(categories)).dropna(axis=0, how="any")
    per_seed = complete.mean(axis=1) * 100.0
    return per_seed.groupby(level=list(conditions)).agg(["mean", "std", "count"])


def _per_category(done: pd.DataFrame, conditions: tuple[str, ...], categories: tuple[str, ...],
                  metrics: tuple[str, ...], index: pd.Index) -> pd.DataFrame:
    """One row per (condition, category): mean, sample std and count over seeds of each metric (percent)."""
    full = pd.MultiIndex.from_tuples([(*(key if isinstance(key, tuple) else (key,)), category)
                                      for key in index for category in categories],
                                     names=[*conditions, "category"])
    scaled = done.assign(**{m: done[m] * 100.0 for m in metrics})
    spec = {f"{m}{suffix}": (m, how) for m in metrics for suffix, how in (("", "mean"), ("_std", "std"),
                                                                         ("_n_seeds", "count"))}
    grouped = (scaled.groupby([*conditions, "category"]).agg(**spec) if len(scaled)
               else pd.DataFrame(columns=list(spec), dtype=float))
    out = grouped.reindex(full)
    for m in metrics:
        out[f"{m}_n_seeds"] = out[f"{m}_n_seeds"].fillna(0).astype(int)
    return out.reset_index()


def _per_condition(frame: pd.DataFrame, conditions: tuple[str, ...], column: str, index: pd.Index) -> list[Any]:
    """The single value of `column` among a condition's trials (e.g. its variant), else None."""
    values = frame.groupby(list(conditions))[column].agg(_unique)
    return [None if pd.isna(v) else v for v in values.reindex(index)]


def _without_masks(done: pd.DataFrame, conditions: tuple[str, ...], metric: str, index: pd.Index) -> list[bool]:
    """Per condition: True when a pixel metric is undefined because every finished trial's data had no masks."""
    if (not metric.startswith("pixel") and metric != "aupro") or "has_masks" not in done or done.empty:
        return [False] * len(index)
    flags = done.dropna(subset=["has_masks"]).groupby(list(conditions))["has_masks"].agg(lambda f: bool((f == 0).all()))
    return [bool(v) if not pd.isna(v) else False for v in flags.reindex(index)]


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
