"""What a table cost: wall time per stage, the resources each trial held, CPU- and GPU-hours, and the idle share.

Every number comes from the trials' own reports: Tune stamps each report with `time_total_s` (the trial's wall
time so far, restores included), the trainable's first report says what the trial held (`cpus`, `gpus`) and on
which machine (`host`, `cpu_model`, `gpu_model`). A stage's wall time is the clock at its last report minus the
clock at the previous stage's last report; "evaluation" is the time from the last training report to the final
one. Experiments from before these fields existed get NaN, and the section says so.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

TIMED_PHASES = (("stage1", "stage1"), ("stage2", "stage2"), ("stage3", "stage3"), ("done", "eval"))
TIME_COLUMNS = tuple(f"time_{name}_s" for _, name in TIMED_PHASES)
HARDWARE_COLUMNS = ("cpus", "gpus", "host", "cpu_model", "gpu_model")
COST_COLUMNS = ("wall_s", *TIME_COLUMNS, *HARDWARE_COLUMNS)


def trial_cost(history: pd.DataFrame | None) -> dict[str, Any]:
    """A trial's wall time per phase and what it held, from its reports (one row each, Tune's progress)."""
    cost: dict[str, Any] = {column: math.nan for column in COST_COLUMNS}
    if history is None or history.empty or "time_total_s" not in history.columns:
        return cost
    clock = pd.to_numeric(history["time_total_s"], errors="coerce")
    cost["wall_s"] = float(clock.max())
    if "stage" in history.columns:
        previous = 0.0
        for stage, name in TIMED_PHASES:
            at = clock[history["stage"] == stage]
            if not at.dropna().empty:
                cost[f"time_{name}_s"] = float(at.max()) - previous
                previous = float(at.max())
    for column in HARDWARE_COLUMNS:
        if column in history.columns:
            known = history[column].dropna()
            if not known.empty:
                cost[column] = known.iloc[0]
    return cost


def add_hours(frame: pd.DataFrame) -> pd.DataFrame:
    """cpu_hours and gpu_hours per trial: wall time x the CPUs and GPUs it held."""
    wall = pd.to_numeric(frame["wall_s"], errors="coerce")
    return frame.assign(cpu_hours=wall * pd.to_numeric(frame["cpus"], errors="coerce") / 3600.0,
                        gpu_hours=wall * pd.to_numeric(frame["gpus"], errors="coerce").fillna(0.0) / 3600.0)


def cost_table(trials: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Trials, wall hours, CPU-hours and GPU-hours summed per group of `by` (e.g. study, variant, category)."""
    frame = add_hours(trials)
    grouped = frame.groupby(by, dropna=False, sort=True)
    table = grouped.agg(trials=("trial_id", "count"), wall_hours=("wall_s", lambda s: s.sum(min_count=1) / 3600),
                        cpu_hours=("cpu_hours", lambda s: s.sum(min_count=1)),
                        gpu_hours=("gpu_hours", lambda s: s.sum(min_count=1)))
    return table.reset_index()


def one_more_seed(trials: pd.DataFrame) -> pd.DataFrame:
    """Per study: the CPU- and GPU-hours one more seed of every configuration and category would add (the mean
    cost of a seed so far)."""
    frame = add_hours(trials)
    per_seed = frame.groupby(["study", "seed"], dropna=False)[["cpu_hours", "gpu_hours"]].sum(min_count=1)
    return per_seed.groupby(level="study").mean().reset_index()


def idle_share(busy_cpu_hours: float, wall_hours: float, cluster_cpus: float) -> float:
    """The share of the CPU-hours the cluster offered over the experiment's wall time that no trial used."""
    offered = wall_hours * cluster_cpus
    if not (offered > 0) or math.isnan(busy_cpu_hours):
        return math.nan
    return max(0.0, 1.0 - busy_cpu_hours / offered)


def stage1_phase(experiment_dir) -> pd.DataFrame:
    """One row per trial of the experiment's stage-1 phase (`<experiment>/stage1`): its key and cost; empty when
    the experiment has no phase (a given --stage1-checkpoint) or the phase cannot be read."""
    from pathlib import Path

    folder = Path(experiment_dir) / "stage1"
    if not any(folder.glob("experiment_state-*.json")):
        return pd.DataFrame(columns=["trial_id", *COST_COLUMNS])
    from ray.tune import ExperimentAnalysis

    try:
        analysis = ExperimentAnalysis(str(folder.resolve()))
    except Exception:  # a half-synced phase: no cost rather than no report
        return pd.DataFrame(columns=["trial_id", *COST_COLUMNS])
    rows = [{"trial_id": trial.trial_id, **trial_cost(analysis.trial_dataframes.get(trial.trial_id))}
            for trial in analysis.trials]
    return pd.DataFrame(rows, columns=["trial_id", *COST_COLUMNS])


def stage1_reused(experiment_dir) -> int:
    """How many of the experiment's stage-1 models were copied from the shared store instead of trained."""
    from pathlib import Path

    return len(list((Path(experiment_dir) / "stage1").glob("*/reused.json")))


def study_costs(trials: pd.DataFrame, phases: dict[str, pd.DataFrame], clusters: dict[str, dict[str, Any]],
                reused: dict[str, int] | None = None) -> pd.DataFrame:
    """Per experiment: the stage-1 phase's and the main trials' CPU-/GPU-hours, the total, the wall time from
    the first start to the last report, and the idle share of the cluster's CPUs over that time.

    clusters: experiment -> {"cpus": the cluster's CPUs, "started": unix time of the first start}; reused:
    experiment -> stage-1 models taken from the shared store (trained, and paid for, by an earlier study)."""
    reused = reused or {}
    rows = []
    for experiment, group in trials.groupby("experiment", sort=True):
        main, phase = add_hours(group), add_hours(phases.get(experiment, pd.DataFrame(columns=list(COST_COLUMNS))))
        cluster = clusters.get(experiment) or {}
        started, cpus = cluster.get("started", math.nan), cluster.get("cpus", math.nan)
        ended = pd.to_numeric(group["timestamp"], errors="coerce").max()
        wall_hours = (ended - started) / 3600.0 if not math.isnan(started) else math.nan
        busy = _sum(main["cpu_hours"]) + (_sum(phase["cpu_hours"]) if len(phase) else 0.0)
        rows.append({"experiment": experiment, "stage1_trials": len(phase),
                     "stage1_reused": reused.get(experiment, 0),
                     "stage1_cpu_hours": _sum(phase["cpu_hours"]) if len(phase) else 0.0,
                     "stage1_gpu_hours": _sum(phase["gpu_hours"]) if len(phase) else 0.0,
                     "main_trials": len(main), "main_cpu_hours": _sum(main["cpu_hours"]),
                     "main_gpu_hours": _sum(main["gpu_hours"]), "total_cpu_hours": busy,
                     "total_gpu_hours": _sum(main["gpu_hours"]) + (_sum(phase["gpu_hours"]) if len(phase) else 0.0),
                     "wall_hours": wall_hours, "cluster_cpus": cpus,
                     "idle_share": idle_share(busy, wall_hours, cpus)})
    return pd.DataFrame(rows)


def _sum(values: pd.Series) -> float:
    return float(pd.to_numeric(values, errors="coerce").sum(min_count=1))


def cost_section(trials: pd.DataFrame, experiment_dirs: dict[str, str], provenance: dict[str, Any],
                 tables_dir, link) -> str:
    """The report's "Cost" section (Markdown), and its CSVs in `tables_dir`: cost.csv (per trial),
    cost_studies.csv, cost_by_condition.csv, cost_by_category.csv, cost_one_more_seed.csv."""
    from pathlib import Path

    tables_dir = Path(tables_dir)
    tables_dir.mkdir(parents=True, exist_ok=True)
    lines = ["## Cost", ""]
    if trials["wall_s"].dropna().empty:
        return "\n".join(lines + ["The trials recorded no timing (experiments from before cost accounting), so "
                                  "this report cannot say what they cost.", ""])
    phases = {name: stage1_phase(folder) for name, folder in experiment_dirs.items()}
    clusters = {name: _cluster(doc) for name, doc in provenance.items()}
    per_trial = add_hours(trials)[["experiment", "trial_id", "study", "variant", "params", "category", "seed",
                                   "status", *COST_COLUMNS, "cpu_hours", "gpu_hours"]]
    studies = study_costs(trials, phases, clusters,
                          {name: stage1_reused(folder) for name, folder in experiment_dirs.items()})
    by_condition = cost_table(trials, ["study", "params"])
    by_category = cost_table(trials, ["study", "category"])
    seed = one_more_seed(trials)
    files = {"per trial": per_trial, "per experiment": studies, "per configuration": by_condition,
             "per category": by_category, "one more seed": seed}
    names = {"per trial": "cost.csv", "per experiment": "cost_studies.csv", "per configuration":
             "cost_by_condition.csv", "per category": "cost_by_category.csv", "one more seed":
             "cost_one_more_seed.csv"}
    for key, frame in files.items():
        frame.to_csv(tables_dir / names[key], index=False, na_rep="")
    lines += ["Wall time and what each trial held, from the trials' own reports: CPU-hours = wall time × CPUs "
              "held (GPU-hours likewise). The stage-1 phase trains each stage-1 model once before the main trials; "
              "stage1_reused counts the models copied from the storage's shared stage-1 store instead (no cost here). "
              "Idle share: of the cluster's CPU-hours from the experiment's start to its last report, the part no "
              "trial held.", ""]
    lines += [_markdown(studies), ""]
    untimed = int(trials["wall_s"].isna().sum())
    if untimed:
        lines += [f"{untimed} trial(s) recorded no timing and are not counted.", ""]
    lines += ["Per configuration:", "", _markdown(by_condition), "", "Per category:", "", _markdown(by_category), "",
              "One more seed of every configuration and category would add about (the mean per seed so far):", "",
              _markdown(seed), ""]
    lines.append("CSV: " + " · ".join(f"[{key}]({link(tables_dir / names[key])})" for key in names))
    return "\n".join(lines + [""])


def _cluster(doc: dict[str, Any] | None) -> dict[str, Any]:
    runs = (doc or {}).get("runs") or []
    if not runs:
        return {}
    return {"started": float(runs[0].get("started", math.nan)),
            "cpus": float((runs[-1].get("cluster_resources") or {}).get("CPU", math.nan))}


def _markdown(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False, floatfmt=".3g", missingval="–")
