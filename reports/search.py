"""Search reports: what a searched study (OptunaSearch + ASHA, e.g. studies/sampling.py) tried and what it found.

A searched study gives every trial its own configuration, so the condition table alone hides what was searched.
This module adds, per study: a table with every searched parameter of every trial (a trial ASHA stopped is
"stopped at iteration N" with its last interim value, not missing), the best configurations by their final
metric, Optuna's parameter importances (an in-memory Optuna study rebuilt from the finished trials) and a figure
of the metric against each searched parameter.

Metric keys: when a study splits its test set, a trial's final metrics carry a `report_` prefix
(`report_image_auroc`, the report part) and its interim ones a `search_` prefix (the part searchers see). Both
are preferred when present; without them the plain key is used for both.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from reports.configurations import configurations, final_column, pareto_front
from reports.load import REPORT_PREFIX, is_tuned
from reports.render import format_interval
from reports.spec import METRIC_NAMES, MISSING

SEARCH_PREFIX = "search_"
OPTIONS_FILE = "study_options.json"  # written by the study runner (docs/results_schema.md)
MIN_TRIALS_FOR_IMPORTANCE = 5  # finished trials needed before parameter importances mean anything
BEST_COUNT = 5
FINISHED, STOPPED = "finished (final value)", "stopped (last interim value)"
PARAM_NAMES = {"sampling_strategy": "strategy", "similarity_bound": "λs"}
_HISTORY_KEYS = ("stage", "stage_iteration", "training_iteration")


@dataclass(frozen=True)
class SearchReport:
    """One searched study's trials (one row each, columns below) and what was searched."""

    trials: pd.DataFrame  # trial_id, category, seed, state, iteration, stage, stage_iteration, <params...>,
    #                       last_search (interim value, fraction), final (report value, fraction), status
    params: tuple[str, ...]  # flattened override keys that vary between trials, e.g. "sampling_params/low"
    metric: str  # the first searched metric ("final", "last_search")
    importances: pd.DataFrame  # scope ("all" or a strategy), parameter, importance, n_trials
    importance_note: str  # why there are no importances, or which evaluator computed them
    metrics: tuple[str, ...] = ()  # every searched metric (several: a multi-objective search); "final_<m>" columns
    configs: pd.DataFrame | None = None  # one row per configuration over its runs (reports.configurations)


def is_searched(trials: pd.DataFrame) -> bool:
    """A study ran with a searcher or scheduler (see reports.load.is_tuned), or a trial reported search_ metrics."""
    folders = {Path(p).parent for p in trials["path"].dropna()} if "path" in trials else set()
    if any(is_tuned(folder) for folder in folders):
        return True
    return any(any(str(k).startswith(SEARCH_PREFIX) for k in read_history(p).columns)
               for p in trials.get("path", pd.Series(dtype=object)).dropna())


def search_report(trials: pd.DataFrame, metric: str = "image_auroc",
                  metrics: tuple[str, ...] | None = None) -> SearchReport:
    """Every trial of one searched study with its searched parameters, progress and values (see SearchReport).
    metrics: every searched metric, the first being `metric` (default: `metric` alone)."""
    metrics = tuple(metrics) if metrics else (metric,)
    metric = metrics[0]
    rows = []
    for trial in trials.itertuples(index=False):
        history = read_history(trial.path)
        overrides = json.loads(trial.overrides) if isinstance(trial.overrides, str) else {}
        extra = {final_column(m, metrics): _final(history, m) for m in metrics[1:]}
        rows.append({"trial_id": trial.trial_id, "category": trial.category, "seed": trial.seed,
                     "status": trial.status, "path": trial.path, **_progress(history, trial.status, metric),
                     **extra, **flatten(overrides)})
    frame = pd.DataFrame(rows)
    params = searched_params(frame.drop(columns=[c for c in frame if c not in _param_columns(frame)]))
    ordered = ["trial_id", "category", "seed", "state", *params, "last_search", "final",
               *[final_column(m, metrics) for m in metrics[1:]], "status", "iteration", "stage", "stage_iteration",
               "path"]
    frame = frame.reindex(columns=ordered)
    frame = frame.sort_values(["final", "last_search"], ascending=False, na_position="last").reset_index(drop=True)
    importances, note = parameter_importances(frame, params)
    return SearchReport(frame, params, metric, importances, note, metrics, configurations(frame, params, metrics))


def searched_metrics(experiment_dirs: dict[str, Any], trials: pd.DataFrame) -> tuple[str, ...]:
    """The metric(s) the search optimised, from its experiment's study_options.json (`search_metrics`); image
    AUROC for experiments from before --metric."""
    for name in trials.get("experiment", pd.Series(dtype=object)).dropna().unique():
        path = Path(str(experiment_dirs.get(name, ""))) / OPTIONS_FILE
        if path.is_file():
            saved = json.loads(path.read_text(encoding="utf-8")).get("search_metrics")
            if saved:
                return tuple(saved)
    return ("image_auroc",)


def read_history(trial_path: Any) -> pd.DataFrame:
    """A trial's results (result.json, one JSON object a line), scalar keys only; empty if there are none.

    A half-written last line (an interrupted trial) is skipped, not fatal.
    """
    if not isinstance(trial_path, str) or not trial_path:
        return pd.DataFrame()
    path = Path(trial_path) / "result.json"
    if not path.is_file():
        return pd.DataFrame()
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            result = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(result, dict):
            rows.append({k: v for k, v in result.items() if not isinstance(v, (dict, list))})
    return pd.DataFrame(rows)


def flatten(overrides: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"sampling_params": {"low": 0.1}} -> {"sampling_params/low": 0.1} (Optuna's names without "overrides/")."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def searched_params(params: pd.DataFrame) -> tuple[str, ...]:
    """Override keys that differ between trials (a key set in only some trials counts): what the search drew."""
    searched = [c for c in params if params[c].astype(str).nunique(dropna=False) > 1]
    return tuple(sorted(searched, key=lambda c: (c != "sampling_strategy", c.count("/"))))  # else drawing order


def param_label(param: str) -> str:
    """Display name: "sampling_params/low" -> "low", "similarity_bound" -> "λs"."""
    return PARAM_NAMES.get(param, param.rsplit("/", 1)[-1])


def parameter_importances(frame: pd.DataFrame, params: tuple[str, ...]) -> tuple[pd.DataFrame, str]:
    """fANOVA importances (Optuna) of the searched parameters for the final metric of the finished trials.

    Over all finished trials for the parameters every one of them has (e.g. the strategy), then per strategy
    for that strategy's own parameters; a scope with fewer than MIN_TRIALS_FOR_IMPORTANCE trials is skipped.
    """
    columns = ["scope", "parameter", "importance", "n_trials"]
    finished = frame[frame["final"].notna()]
    if len(finished) < MIN_TRIALS_FOR_IMPORTANCE:
        return pd.DataFrame(columns=columns), (f"Parameter importances need at least {MIN_TRIALS_FOR_IMPORTANCE} "
                                               f"finished trials; this search has {len(finished)}.")
    scopes = [("all", finished)]
    if "sampling_strategy" in params:
        scopes += [(str(s), group) for s, group in finished.groupby("sampling_strategy")]
    rows = []
    for scope, group in scopes:
        varying = [p for p in params if group[p].notna().all() and group[p].astype(str).nunique() > 1]
        if scope != "all":
            varying = [p for p in varying if p != "sampling_strategy"]
        if len(group) < MIN_TRIALS_FOR_IMPORTANCE or not varying:
            continue
        for name, value in _optuna_importances(group, varying).items():
            rows.append({"scope": scope, "parameter": name, "importance": value, "n_trials": len(group)})
    if not rows:
        return pd.DataFrame(columns=columns), ("No parameter varies over enough finished trials "
                                               f"(at least {MIN_TRIALS_FOR_IMPORTANCE}) for importances.")
    return pd.DataFrame(rows, columns=columns), ("Importances: Optuna's fANOVA evaluator (seed 0) on an in-memory "
                                                 "study of the finished trials and their final values.")


def _optuna_importances(group: pd.DataFrame, params: list[str]) -> dict[str, float]:
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = {}
    for p in params:
        values = group[p]
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.notna().all() and not values.map(lambda v: isinstance(v, (bool, str))).any():
            low, high = float(numeric.min()), float(numeric.max())
            distributions[p] = FloatDistribution(low, high, log=low > 0 and high / low >= 10)
        else:
            distributions[p] = CategoricalDistribution(sorted(values.astype(str).unique()))
    study = optuna.create_study(direction="maximize")
    for _, row in group.iterrows():
        values = {p: (float(row[p]) if isinstance(distributions[p], FloatDistribution) else str(row[p]))
                  for p in params}
        study.add_trial(optuna.trial.create_trial(params=values, distributions=distributions,
                                                  value=float(row["final"])))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna marks some evaluators experimental
        found = optuna.importance.get_param_importances(
            study, params=params, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    return {k: float(v) for k, v in found.items()}


def best_configurations(report: SearchReport, count: int = BEST_COUNT) -> pd.DataFrame:
    """The `count` finished trials with the highest final (report-part) value, best first, with the 95% bootstrap
    interval of that value over the trial's test images (`ci_low`, `ci_high`, percent; NaN without records)."""
    from reports.intervals import attach_records, cell_interval

    best = report.trials[report.trials["final"].notna()].head(count).copy()
    records = attach_records(best)
    intervals = [cell_interval(pd.DataFrame([row]), records, (str(row["category"]),), report.metric,
                               100 * row["final"]) if row["trial_id"] in records else None
                 for _, row in best.iterrows()]
    best["ci_low"] = [i.low if i else math.nan for i in intervals]
    best["ci_high"] = [i.high if i else math.nan for i in intervals]
    return best


def display_trials(frame: pd.DataFrame, params: tuple[str, ...], metric: str) -> pd.DataFrame:
    """Strings for the Markdown/LaTeX table: percent values, MISSING for a parameter a trial did not draw."""
    name = METRIC_NAMES.get(metric, metric)
    out = pd.DataFrame({"trial": frame["trial_id"], "category": frame["category"], "seed": frame["seed"].astype(str),
                        "state": frame["state"]})
    for p in params:
        out[param_label(p)] = [_format_param(v) for v in frame[p]]
    out[f"last interim {name}"] = [_percent(v) for v in frame["last_search"]]
    out[f"final {name}"] = [_percent(v) for v in frame["final"]]
    for column in [c for c in frame if str(c).startswith("final_")]:
        other = column.removeprefix("final_")
        out[f"final {METRIC_NAMES.get(other, other)}"] = [_percent(v) for v in frame[column]]
    if "ci_low" in frame:
        out[f"final {name} 95% CI"] = [format_interval(low, high) for low, high in zip(frame["ci_low"],
                                                                                      frame["ci_high"])]
    return out


def plot_metric_vs_param(frame: pd.DataFrame, param: str, metric: str, ax: Axes | None = None) -> Axes:
    """The metric of every trial against one searched parameter: final value (o) for finished trials, last
    interim value (x) for stopped ones; colour = strategy, the same in every panel. Nothing is computed here."""
    ax = ax if ax is not None else Figure().add_subplot()
    drawn = frame[frame[param].notna()].assign(
        value=lambda f: 100 * f["final"].fillna(f["last_search"]),
        outcome=lambda f: np.where(f["final"].notna(), FINISHED, STOPPED))
    drawn = drawn[drawn["value"].notna()]
    hue, palette = None, None
    if "sampling_strategy" in frame:
        strategies = sorted(frame["sampling_strategy"].dropna().astype(str).unique())
        hue, palette = "sampling_strategy", dict(zip(strategies, sns.color_palette("colorblind", len(strategies))))
    numeric = pd.to_numeric(drawn[param], errors="coerce")
    categorical = not (len(drawn) and numeric.notna().all())
    if len(drawn):
        shown = drawn.assign(**{param: drawn[param].astype(str) if categorical else numeric})
        sns.scatterplot(data=shown, x=param, y="value", hue=hue, palette=palette, style="outcome",
                        markers={FINISHED: "o", STOPPED: "X"}, s=60, alpha=0.8, ax=ax)
        if not categorical and numeric.min() > 0 and numeric.max() / numeric.min() >= 10:
            ax.set_xscale("log")
    ax.set_xlabel(param_label(param))
    ax.set_ylabel(f"{METRIC_NAMES.get(metric, metric)} (%)")
    return ax


def write_search(report: SearchReport, name: str, title: str, tables: Path, figures: Path,
                 link) -> str:
    """Write the search tables (md, tex, csv) and figure (png, pdf); returns the report.md section."""
    from reports.figures import save_figure
    from reports.render import write_table

    metric_name = METRIC_NAMES.get(report.metric, report.metric)
    frame, params = report.trials, report.params
    stopped = int(frame["state"].str.startswith("stopped").sum())
    files = write_table(display_trials(frame, params, report.metric), frame, tables / f"{name}-search-trials",
                        f"{title}: every trial", [f"{stopped} of {len(frame)} trials stopped early."])
    best = best_configurations(report)
    best_files = write_table(display_trials(best, params, report.metric), best, tables / f"{name}-search-best",
                             f"{title}: best configurations")
    lines = [f"### {title}: search", "",
             f"{len(frame)} trials, {int(frame['final'].notna().sum())} finished, {stopped} stopped early by the "
             f"scheduler (shown with the iteration they stopped at and their last interim {metric_name}). "
             f"Searched: {', '.join(param_label(p) for p in params) or 'nothing varies'}. \"final\" is the "
             f"trial's last evaluation (the report part of the test set where the study split it), \"last "
             f"interim\" the last value the searcher saw. {MISSING}: a parameter the trial did not draw.", ""]
    lines += [f"Best configurations (final {metric_name}):", "",
              display_trials(best, params, report.metric).to_markdown(index=False, disable_numparse=True), "",
              f"- Every trial: [Markdown]({link(files['md'])}) · [LaTeX]({link(files['tex'])}) · "
              f"[CSV]({link(files['csv'])}); best: [CSV]({link(best_files['csv'])})", ""]
    lines += _configurations_lines(report, name, title, tables, figures, link)
    if report.importances.empty:
        lines += [report.importance_note, ""]
    else:
        shown = report.importances.assign(parameter=report.importances["parameter"].map(param_label),
                                          importance=report.importances["importance"].map(lambda v: f"{v:.2f}"))
        lines += [f"Parameter importances for the final {metric_name}. {report.importance_note}", "",
                  shown.to_markdown(index=False, disable_numparse=True), ""]
    if params:
        figure = Figure(figsize=(3.6 * len(params), 3.4), layout="constrained")
        for ax, param in zip(np.atleast_1d(figure.subplots(1, len(params), sharey=True, squeeze=False)[0]), params):
            plot_metric_vs_param(frame, param, report.metric, ax=ax)
        handles, labels = figure.axes[0].get_legend_handles_labels()
        for ax in figure.axes:  # one legend (strategies share their colour across panels)
            if ax.get_legend() is not None:
                ax.get_legend().remove()
        merged = dict(zip(labels, handles))
        for ax in figure.axes[1:]:
            merged.update({k: v for k, v in zip(*reversed(ax.get_legend_handles_labels())) if k not in merged})
        figure.legend(list(merged.values()), [param_label(k) if k == "sampling_strategy" else k for k in merged],
                      loc="outside right upper", fontsize=7, frameon=False)
        figure.suptitle(f"{title}: {metric_name} against each searched parameter", fontsize=9)
        png = save_figure(figure, figures / f"{name}-search-params")[0]
        lines += [f"![{name} search]({link(png)}) ([PDF]({link(png.with_suffix('.pdf'))}))", ""]
    return "\n".join(lines)


def display_configurations(configs: pd.DataFrame, params: tuple[str, ...], metrics: tuple[str, ...]) -> pd.DataFrame:
    """Strings for the configurations table: parameters, runs, and per metric mean and 95% interval (percent)."""
    out = pd.DataFrame({param_label(p): [_format_param(v) for v in configs[p]] for p in params})
    out["runs (done/stopped)"] = [f"{r.runs} ({r.done}/{r.stopped})" for r in configs.itertuples()]
    for metric in metrics:
        name = METRIC_NAMES.get(metric, metric)
        out[f"{name} mean"] = [_percent(v) for v in configs[metric]]
        out[f"{name} 95% CI"] = [format_interval(100 * low, 100 * high) for low, high in
                                 zip(configs[f"{metric}_low"], configs[f"{metric}_high"])]
    return out


def _configurations_lines(report: SearchReport, name: str, title: str, tables: Path, figures: Path,
                          link) -> list[str]:
    """The configurations over their runs (with --repeats) and the Pareto front (several metrics)."""
    from reports.render import write_table

    configs, metrics = report.configs, report.metrics or (report.metric,)
    if configs is None or configs.empty:
        return []
    lines = []
    if int(configs["runs"].max()) > 1:
        shown = display_configurations(configs, report.params, metrics)
        files = write_table(shown, configs, tables / f"{name}-search-configurations",
                            f"{title}: configurations over their runs")
        lines += ["Each configuration over its runs (seeds and categories, `--repeats`): the mean of the finished "
                  "runs' final values and its 95% Student t interval over them (the searcher optimised the mean; "
                  "a stopped run counted for it with its last interim value).", "",
                  shown.to_markdown(index=False, disable_numparse=True), "",
                  f"- [CSV]({link(files['csv'])}) · [LaTeX]({link(files['tex'])})", ""]
    if len(metrics) > 1:
        front = configs[pareto_front(configs, metrics)]
        names = " and ".join(METRIC_NAMES.get(m, m) for m in metrics)
        shown = display_configurations(front, report.params, metrics)
        files = write_table(shown, front, tables / f"{name}-search-pareto", f"{title}: Pareto front")
        lines += [f"Pareto front of {names} (a multi-objective search): the {len(front)} configuration(s) no other "
                  "beats on every metric, from the final (report-part) values.", "",
                  shown.to_markdown(index=False, disable_numparse=True), "",
                  f"- [CSV]({link(files['csv'])}) · [LaTeX]({link(files['tex'])})", ""]
        png = _pareto_figure(configs, metrics, f"{title}: Pareto front", figures / f"{name}-search-pareto")
        lines += [f"![{name} Pareto front]({link(png)}) ([PDF]({link(png.with_suffix('.pdf'))}))", ""]
    return lines


def _pareto_figure(configs: pd.DataFrame, metrics: tuple[str, ...], title: str, stem: Path) -> Path:
    """The first two metrics of every configuration (percent), the front joined and marked."""
    from reports.figures import save_figure

    x, y = metrics[0], metrics[1]
    figure = Figure(figsize=(4.4, 3.6), layout="constrained")
    ax = figure.add_subplot()
    drawn = configs.dropna(subset=[x, y])
    front = drawn[pareto_front(drawn, metrics)].sort_values(x)
    ax.scatter(100 * drawn[x], 100 * drawn[y], s=30, color="0.6", label="configuration")
    ax.plot(100 * front[x], 100 * front[y], "o-", color=sns.color_palette("colorblind")[0], label="Pareto front")
    ax.set_xlabel(f"{METRIC_NAMES.get(x, x)} (%)")
    ax.set_ylabel(f"{METRIC_NAMES.get(y, y)} (%)")
    ax.legend(fontsize=7, frameon=False)
    ax.set_title(title, fontsize=9)
    return save_figure(figure, stem)[0]


def _progress(history: pd.DataFrame, status: str, metric: str) -> dict[str, Any]:
    """Where a trial got to and its values: state text, iteration, stage, last interim and final values."""
    last = history.iloc[-1].to_dict() if not history.empty else {}
    done = history[history["stage"] == "done"] if "stage" in history else pd.DataFrame()
    final_row = done.iloc[-1].to_dict() if not done.empty else {}
    interim = history[history["stage"] != "done"] if "stage" in history else history
    search_key = next((k for k in (SEARCH_PREFIX + metric, metric) if k in interim), None)
    last_search = interim[search_key].dropna() if search_key else pd.Series(dtype=float)
    final = next((final_row[k] for k in (REPORT_PREFIX + metric, metric) if _number(final_row.get(k))), math.nan)
    iteration = last.get("training_iteration", math.nan)
    state = "done" if status == "done" else (
        f"stopped at iteration {int(iteration)}" if status == "stopped" and _number(iteration) else
        f"{status} at iteration {int(iteration)}" if _number(iteration) else str(status))
    if state.startswith("stopped") and _number(last.get("stage_iteration")):
        state += f" ({last.get('stage')} {int(last['stage_iteration'])})"
    return {"state": state, "iteration": iteration, "stage": last.get("stage"),
            "stage_iteration": last.get("stage_iteration", math.nan),
            "last_search": float(last_search.iloc[-1]) if len(last_search) else math.nan, "final": float(final)}


def _final(history: pd.DataFrame, metric: str) -> float:
    """A metric's final (report-part) value in a trial's history; NaN before its "done" row."""
    done = history[history["stage"] == "done"] if "stage" in history else pd.DataFrame()
    row = done.iloc[-1].to_dict() if not done.empty else {}
    return float(next((row[k] for k in (REPORT_PREFIX + metric, metric) if _number(row.get(k))), math.nan))


def _param_columns(frame: pd.DataFrame) -> list[str]:
    fixed = {"trial_id", "category", "seed", "status", "state", "iteration", "stage", "stage_iteration",
             "last_search", "final", "path"}
    return [c for c in frame if c not in fixed and not str(c).startswith("final_")]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value)


def _format_param(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _percent(value: Any) -> str:
    return f"{100 * value:.1f}" if _number(value) else MISSING
