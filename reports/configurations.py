"""A search's sampled configurations, each judged on several runs (`--repeats`: seeds, and the study's categories):
the mean of every searched metric over the runs that finished, its 95% interval over them, and the Pareto front
of a multi-objective search. Pure functions of the search table (`reports.search`); values are fractions.

The interval is Student's t over the runs' final values: mean ± t(0.975, n-1)·s/√n (n ≥ 2; one run has none).
It says how much the configuration's mean moves between seeds and categories, which is what a winner must beat;
each run's own test-image interval is in the trial table.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95


def configurations(trials: pd.DataFrame, params: tuple[str, ...], metrics: tuple[str, ...]) -> pd.DataFrame:
    """One row per distinct configuration (the searched `params`): `runs`, `done`, `stopped`, and per metric `m`
    (mean of the finished runs' final values), `m_low`, `m_high` (95% t interval), `m_n` (finished runs);
    best first by the first metric."""
    frame = trials.copy()
    frame["_key"] = [" | ".join(map(str, values)) for values in frame[list(params)].itertuples(index=False)] \
        if params else ""
    rows = []
    for _, group in frame.groupby("_key", sort=False):
        row = {p: group[p].iloc[0] for p in params}
        row.update(runs=len(group), done=int((group["status"] == "done").sum()),
                   stopped=int(group["state"].astype(str).str.startswith("stopped").sum()))
        for metric in metrics:
            values = pd.to_numeric(group[final_column(metric, metrics)], errors="coerce").dropna().to_numpy(float)
            mean, low, high = mean_interval(values)
            row.update({metric: mean, f"{metric}_low": low, f"{metric}_high": high, f"{metric}_n": len(values)})
        rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    return out.sort_values(metrics[0], ascending=False, na_position="last").reset_index(drop=True)


def final_column(metric: str, metrics: tuple[str, ...]) -> str:
    """The search table's column of a metric's final value ("final" for the first searched metric)."""
    return "final" if metric == metrics[0] else f"final_{metric}"


def mean_interval(values: np.ndarray) -> tuple[float, float, float]:
    """(mean, low, high): the 95% Student t interval of the mean; NaN interval below two values."""
    if len(values) == 0:
        return math.nan, math.nan, math.nan
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values)))
    return mean, mean - half, mean + half


def pareto_front(frame: pd.DataFrame, metrics: tuple[str, ...]) -> pd.Series:
    """True for rows no other row dominates (at least as good in every metric, better in one; larger is better);
    False for rows with a missing metric."""
    values = frame[list(metrics)].to_numpy(float)
    complete = ~np.isnan(values).any(axis=1)
    front = complete.copy()
    for i in np.flatnonzero(complete):
        others = values[complete]
        dominated = ((others >= values[i]).all(axis=1) & (others > values[i]).any(axis=1)).any()
        front[i] = not dominated
    return pd.Series(front, index=frame.index)


__all__ = ["CONFIDENCE", "configurations", "final_column", "mean_interval", "pareto_front"]
