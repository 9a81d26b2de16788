"""Figures: each function draws an already-aggregated DataFrame onto an Axes and returns it; nothing is computed.

Colour-blind palette throughout; a missing value is written as "missing", never drawn as 0. `new_axes` and
`save_figure` use matplotlib's object API (no pyplot state), so building a report needs no display backend.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from reports.spec import METRIC_NAMES

PALETTE = "colorblind"
MISSING_TEXT = "missing"  # a figure's marker for a value the experiment does not have (tables use "–")
PAPER_COLOUR = "black"


def new_axes(width: float = 6.0, height: float = 4.0) -> Axes:
    """A fresh Axes on a Figure that is not registered with pyplot (safe in a headless run)."""
    figure = Figure(figsize=(width, height), layout="constrained")
    return figure.add_subplot()


def save_figure(figure: Figure, stem: Path) -> list[Path]:
    """Write stem.png (150 dpi) and stem.pdf; returns both paths."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for path in paths:
        figure.savefig(path, dpi=150)
    return paths


def plot_metric_curve(ours: pd.DataFrame, x: str, metric: str, paper: pd.DataFrame | None = None,
                      series: str | None = None, ax: Axes | None = None) -> Axes:
    """Our metric against x with a ± std band, and the paper's curve (columns x, "value") dashed.

    ours: one row per x (and per series), columns x, metric, f"{metric}_std" (percent).
    """
    ax = ax if ax is not None else _pyplot_axes()
    colours = sns.color_palette(PALETTE)
    groups = [(None, ours)] if series is None or series not in ours else list(ours.groupby(series, sort=False))
    for i, (name, frame) in enumerate(groups):
        colour = colours[i % len(colours)]
        label = "ours" if name is None else f"ours: {name}"
        sns.lineplot(data=frame, x=x, y=metric, estimator=None, marker="o", color=colour, label=label, ax=ax)
        mean, std = frame[metric].to_numpy(float), frame[f"{metric}_std"].to_numpy(float)
        low, high = _interval(frame, metric)
        if np.isfinite(low).any():  # the bootstrap 95% interval where trials saved records
            ax.fill_between(frame[x].to_numpy(float), low, high, color=colour, alpha=0.25, linewidth=0,
                            label="95% CI" if i == 0 else None)
        else:
            ax.fill_between(frame[x].to_numpy(float), mean - std, mean + std, color=colour, alpha=0.25,
                            linewidth=0, label="± std over seeds" if i == 0 and np.isfinite(std).any() else None)
        for xv, yv in zip(frame[x], frame[metric]):
            if pd.isna(yv):
                ax.annotate(MISSING_TEXT, (float(xv), 0.02), xycoords=("data", "axes fraction"), ha="center",
                            va="bottom", color=colour, rotation=90)
    if paper is not None and not paper.empty:
        ax.plot(paper[x], paper["value"], linestyle="--", marker="s", color=PAPER_COLOUR, label="paper")
    ax.set_xscale("log")
    ticks = sorted(set(ours[x].astype(float)) | (set(paper[x].astype(float)) if paper is not None else set()))
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel(x.replace("lambda_s", "λs"))
    ax.set_ylabel(f"{METRIC_NAMES.get(metric, metric)} (%)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    return ax


def plot_grouped_bars(summary: pd.DataFrame, metrics: list[str], label: str = "label",
                      ax: Axes | None = None) -> Axes:
    """Bars per condition (x) and metric (colour) with 95% CI error bars (± std where no CI); the paper's value
    as a black mark.

    summary: one row per condition, columns label, {m}, {m}_std, {m}_paper (percent, NaN where missing).
    """
    ax = ax if ax is not None else _pyplot_axes()
    colours = sns.color_palette(PALETTE)
    n, k = len(summary), len(metrics)
    width = 0.8 / max(k, 1)
    centres = np.arange(n, dtype=float)
    paper_labelled = False
    labelled: set[str] = set()  # error-bar kinds already in the legend
    for j, metric in enumerate(metrics):
        xs = centres - 0.4 + width * (j + 0.5)
        values = summary[metric].to_numpy(float)
        errors = summary[f"{metric}_std"].to_numpy(float)
        has = np.isfinite(values)
        ax.bar(xs[has], values[has], width=width * 0.9, color=colours[j % len(colours)],
               label=METRIC_NAMES.get(metric, metric))
        low, high = _interval(summary, metric)
        with_ci = has & np.isfinite(low) & np.isfinite(high)
        ax.errorbar(xs[with_ci], values[with_ci], yerr=np.vstack([values - low, high - values])[:, with_ci],
                    fmt="none", ecolor="0.2", capsize=3, elinewidth=1,
                    label="95% CI" if with_ci.any() and "95% CI" not in labelled else None)
        spread = has & ~with_ci & np.isfinite(errors)
        ax.errorbar(xs[spread], values[spread], yerr=errors[spread], fmt="none", ecolor="0.6", capsize=3,
                    elinewidth=1, linestyle="--",
                    label="± std (no records)" if spread.any() and "std" not in labelled else None)
        labelled |= {"95% CI"} if with_ci.any() else set()
        labelled |= {"std"} if spread.any() else set()
        for xv, v in zip(xs, values):
            if not np.isfinite(v):
                ax.annotate(MISSING_TEXT, (xv, 0.02), xycoords=("data", "axes fraction"), ha="center",
                            va="bottom", rotation=90)
        paper_col = f"{metric}_paper"
        if paper_col in summary:
            paper = summary[paper_col].to_numpy(float)
            shown = np.isfinite(paper)
            if shown.any():
                ax.scatter(xs[shown], paper[shown], marker="_", s=400, linewidths=2.5, color=PAPER_COLOUR,
                           zorder=3, label=None if paper_labelled else "paper")
                paper_labelled = True
    ax.set_xticks(centres, summary[label].astype(str), rotation=30 if n > 4 else 0, ha="right" if n > 4 else "center")
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylabel("%")
    if ax.get_legend_handles_labels()[0]:  # below the bars: the plot keeps its width for the labels
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22 if n > 4 else -0.14), ncol=3, fontsize=8,
                  frameon=False)
    return ax


def plot_category_heatmap(matrix: pd.DataFrame, metric: str, ax: Axes | None = None) -> Axes:
    """Categories x conditions heatmap of one metric (percent); missing cells stay blank and say "missing"."""
    ax = ax if ax is not None else _pyplot_axes()
    annotations = matrix.map(lambda v: "" if pd.isna(v) else f"{v:.1f}")
    data = matrix.astype(float)
    if data.notna().any().any():
        sns.heatmap(data, annot=annotations.to_numpy(), fmt="", cmap="viridis", mask=data.isna(), ax=ax,
                    cbar_kws={"label": f"{METRIC_NAMES.get(metric, metric)} (%)"}, linewidths=0.5)
    else:
        ax.set_xlim(0, max(data.shape[1], 1))
        ax.set_ylim(max(data.shape[0], 1), 0)
        ax.set_xticks(np.arange(data.shape[1]) + 0.5, data.columns)
        ax.set_yticks(np.arange(data.shape[0]) + 0.5, data.index)
    for (i, j) in zip(*np.nonzero(data.isna().to_numpy())):  # masked cells get no annotation from seaborn
        ax.text(j + 0.5, i + 0.5, MISSING_TEXT, ha="center", va="center")
    long_labels = any(len(str(c)) > 8 for c in data.columns)
    ax.tick_params(axis="x", labelrotation=30 if long_labels else 0)
    if long_labels:
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    ax.tick_params(axis="y", labelrotation=0)
    ax.set_xlabel("")
    ax.set_ylabel("category")
    return ax


def _interval(frame: pd.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The 95% CI columns of a metric, NaN where absent."""
    nan = np.full(len(frame), np.nan)
    if f"{metric}_ci_low" not in frame:
        return nan, nan
    return frame[f"{metric}_ci_low"].to_numpy(float), frame[f"{metric}_ci_high"].to_numpy(float)


def _pyplot_axes() -> Axes:
    import matplotlib.pyplot as plt  # only for interactive use with ax=None

    return plt.subplots()[1]

