"""Load: a results folder (one Tune experiment, or a folder of several) -> one DataFrame row per trial.

Reads through Ray Tune's own result API (`ExperimentAnalysis`), so it works on a finished, running, failed or
interrupted experiment without the trainable. A trial counts as done only if it reported `stage == "done"`
(see docs/results_schema.md); every other trial keeps NaN metrics and says why in `status`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from dsr.variants import VARIANTS as VARIANT_FIELDS
from reports.cost import COST_COLUMNS, trial_cost
from reports.spec import DEFAULT_SAMPLING_STRATEGY, METRICS

STATE_GLOB = "experiment_state-*.json"  # Tune's experiment snapshot (TuneController.CKPT_FILE_TMPL)
SEARCHER_STATE_GLOB = "searcher-state-*.pkl"  # written beside it when a searcher ran
REPORT_PREFIX = "report_"  # final metrics on the report part of a split test set (searched studies)
SEARCH_DEPTH = 3  # how deep below RESULTS_DIR to look for experiment folders

# Status of a trial without a "done" report, from Tune's trial status.
_STATUS = {"ERROR": "failed", "RUNNING": "running", "PENDING": "pending", "PAUSED": "paused",
           "TERMINATED": "incomplete"}

# Variants that fix the sampling strategy themselves (DSR_random -> uniform), from the registry.
_VARIANT_STRATEGY = {name: fields["sampling_strategy"] for name, fields in VARIANT_FIELDS.items()
                     if "sampling_strategy" in fields}

TRIAL_COLUMNS: tuple[str, ...] = (
    "experiment", "trial_id", "status", "tune_status", "study", "variant", "category", "seed", "dataset",
    "preset", "overrides", "lambda_s", "codebook_size", "sampling_strategy", "sampling_params", "sampling",
    "params", *METRICS, "eval_center_crop", "has_masks", "timestamp", "path", *COST_COLUMNS,
)


def find_experiments(results_dir: str | Path) -> list[Path]:
    """Experiment folders (holding an experiment_state-*.json) at or below results_dir, sorted by path.

    Raises FileNotFoundError if results_dir does not exist, ValueError if it is not a folder or holds none.
    """
    root = Path(results_dir)
    if not root.exists():
        raise FileNotFoundError(f"results directory {root} does not exist")
    if not root.is_dir():
        raise ValueError(f"results directory {root} is not a directory")
    found: list[Path] = []

    def walk(folder: Path, depth: int) -> None:
        if any(folder.glob(STATE_GLOB)):
            found.append(folder)  # trial folders below it are not experiments
            return
        if depth == 0:
            return
        for sub in sorted(folder.iterdir()):
            if sub.is_dir() and not sub.name.startswith("."):
                walk(sub, depth - 1)

    walk(root, SEARCH_DEPTH)
    if not found:
        raise ValueError(f"no Ray Tune experiment in {root}: no {STATE_GLOB} in it or in its subfolders "
                         f"(searched {SEARCH_DEPTH} levels deep)")
    return found


def load_experiment(results_dir: str | Path) -> pd.DataFrame:
    """All trials of the experiment(s) in results_dir, one row each (columns: TRIAL_COLUMNS).

    Config columns are flattened to the effective values (lambda_s, codebook_size, sampling_strategy fall back to
    the preset's DSRConfig default); metrics are the fractions of the trial's "done" report, NaN if it has none.
    `df.attrs["notes"]` lists experiments or trials that were skipped and why; `df.attrs["experiments"]` names
    the experiment folders read, `df.attrs["experiment_dirs"]` maps each name to its folder. Raises ValueError if nothing in results_dir is a dsr-studies experiment.
    """
    from ray.tune import ExperimentAnalysis  # heavy import, only when loading

    root = Path(results_dir)
    experiments = find_experiments(root)
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    read: list[str] = []
    folders: dict[str, str] = {}
    for folder in experiments:
        name = folder.relative_to(root).as_posix() if folder != root else folder.name
        try:
            analysis = ExperimentAnalysis(str(folder.resolve()))
        except Exception as error:  # a half-synced or corrupt snapshot: report it, keep the others
            notes.append(f"experiment {name} could not be read ({type(error).__name__}: "
                         f"{_first_line(error)}); skipped")
            continue
        configs = analysis.get_all_configs()
        tuned = is_tuned(folder)
        found = [_trial_row(name, trial, configs.get(trial.trial_id) or {},
                            analysis.trial_dataframes.get(trial.trial_id), tuned) for trial in analysis.trials]
        ours = [row for row in found if row["study"] is not None]
        if not ours:
            notes.append(f"experiment {name} has no trial with a 'study' key in its config; skipped")
            continue
        if len(ours) < len(found):
            notes.append(f"experiment {name}: {len(found) - len(ours)} trial(s) without a 'study' key skipped")
        read.append(name)
        folders[name] = str(folder)
        rows.extend(ours)
    if not rows:
        detail = "; ".join(notes)
        raise ValueError(f"no dsr-studies trials in {root}: {detail}")
    frame = pd.DataFrame(rows, columns=list(TRIAL_COLUMNS))
    frame["seed"] = pd.to_numeric(frame["seed"], errors="coerce").astype("Int64")
    frame["codebook_size"] = pd.to_numeric(frame["codebook_size"], errors="coerce").astype("Int64")
    for column in (*METRICS, "eval_center_crop", "has_masks", "lambda_s", "timestamp", "wall_s", "cpus", "gpus",
                   *(c for c in COST_COLUMNS if c.startswith("time_"))):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    frame = frame.sort_values(["experiment", "study", "variant", "category", "seed", "trial_id"],
                              key=lambda c: c.astype(str) if c.dtype == object else c).reset_index(drop=True)
    frame.attrs["notes"] = notes
    frame.attrs["experiments"] = read
    frame.attrs["experiment_dirs"] = folders
    return frame


def is_tuned(folder: Path) -> bool:
    """The experiment ran with a searcher or scheduler: Tune saved a searcher state, or the metric it optimised
    (the harness sets TuneConfig.metric only for searched studies; a grid has none)."""
    if any(folder.glob(SEARCHER_STATE_GLOB)):
        return True
    for state in folder.glob(STATE_GLOB):
        try:
            runner = json.loads(state.read_text(encoding="utf-8")).get("runner_data") or {}
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(runner, dict) and runner.get("_metric"):
            return True
    return False


def _trial_row(experiment: str, trial: Any, config: dict[str, Any], history: pd.DataFrame | None,
               tuned: bool = False) -> dict[str, Any]:
    """One trial -> one row: flattened effective config, status, final metrics.

    A TERMINATED trial without a final result was stopped by the scheduler in a tuned experiment ("stopped"), and
    ended early otherwise ("incomplete"). Final metrics prefer `report_<metric>` (the report part of a split test
    set) over `<metric>`."""
    overrides = config.get("overrides") or {}
    if not isinstance(overrides, dict):
        overrides = {}
    variant = str(config.get("variant", "unknown"))
    preset_name = config.get("preset")
    strategy = overrides.get("sampling_strategy", _VARIANT_STRATEGY.get(variant, DEFAULT_SAMPLING_STRATEGY))
    sampling_params = overrides.get("sampling_params") or {}
    done = _done_result(trial, history)
    status = "done" if done is not None else _STATUS.get(trial.status, str(trial.status).lower())
    if tuned and status == "incomplete":
        status = "stopped"
    last = done if done is not None else (trial.last_result or {})
    row: dict[str, Any] = {
        "experiment": experiment,
        "trial_id": trial.trial_id,
        "status": status,
        "tune_status": trial.status,
        "study": config.get("study"),
        "variant": variant,
        "category": None if config.get("category") is None else str(config["category"]),
        "seed": config.get("seed"),
        "dataset": str(config.get("dataset", "unknown")),
        "preset": str(preset_name if preset_name is not None else "unknown"),
        "overrides": json.dumps(overrides, sort_keys=True, default=str),
        "lambda_s": overrides.get("similarity_bound", _default("similarity_bound", preset_name)),
        "codebook_size": overrides.get("codebook_size", _default("codebook_size", preset_name)),
        "sampling_strategy": strategy,
        "sampling_params": _kv_label(sampling_params),
        "sampling": f"{strategy}({_kv_label(sampling_params)})" if sampling_params else strategy,
        "params": _params_label(variant, overrides),
        "timestamp": last.get("timestamp", math.nan),
        "path": trial.path,
        **trial_cost(history),
    }
    for metric in METRICS:
        row[metric] = done.get(f"{REPORT_PREFIX}{metric}", done.get(metric, math.nan)) if done is not None else math.nan
    for column in ("eval_center_crop", "has_masks"):
        row[column] = done.get(column, math.nan) if done is not None else math.nan
    return row


def _done_result(trial: Any, history: pd.DataFrame | None) -> dict[str, Any] | None:
    """The trial's last report with stage == "done" (from result.json, fresher than the snapshot), or None."""
    if history is not None and not history.empty and "stage" in history.columns:
        done = history[history["stage"] == "done"]
        if not done.empty:
            return {k: v for k, v in done.iloc[-1].to_dict().items() if not _is_nan(v)}
    last = trial.last_result or {}
    return dict(last) if last.get("stage") == "done" else None


@lru_cache(maxsize=None)
def _default(field: str, preset_name: str | None) -> Any:
    """The preset's DSRConfig default of a field; NaN for an unknown preset (never guessed)."""
    from dsr.config import PRESETS, DSRConfig  # the single source of the defaults

    if preset_name not in PRESETS:
        return math.nan
    if field in PRESETS[preset_name]:
        return PRESETS[preset_name][field]
    spec = DSRConfig.__dataclass_fields__[field]
    return spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()


def _kv_label(values: dict[str, Any]) -> str:
    return ", ".join(f"{key}={_short(values[key])}" for key in sorted(values))


def _params_label(variant: str, overrides: dict[str, Any]) -> str:
    """A readable label of a whole configuration, e.g. "DSR similarity_bound=0.05"."""
    flat = {k: v for k, v in overrides.items() if k != "sampling_params"}
    parts = [variant, _kv_label(flat)]
    if overrides.get("sampling_params"):
        parts.append(f"sampling_params({_kv_label(overrides['sampling_params'])})")
    return " ".join(p for p in parts if p)


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)
