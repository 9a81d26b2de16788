"""Session fixtures: Ray starts once and runs three small Tune experiments whose trials report known metrics."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from reports_testkit import (ABLATION, CATEGORIES, CODEBOOK, LAMBDAS, SAMPLING, SEEDS, known_metrics, make_points,
                             run_tune_experiment, run_unrelated_experiment, trial_key)



@dataclass
class Experiment:
    """A fake experiment on disk and everything a test needs to recompute its tables."""

    path: Path
    points: list[dict]
    metrics: dict[str, dict]
    done: set[str]
    statuses: dict[str, str] = field(default_factory=dict)  # trial_key -> expected status of not-done trials


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole session (kept on 127.0.0.1), shut down at the end."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def experiments(ray_session, tmp_path_factory) -> dict[str, Experiment]:
    """full: all four studies, every trial done (storage 'multi', beside an unrelated experiment);
    partial: an ablation with a failed, an unfinished and a never-started trial (storage 'partial')."""
    root = tmp_path_factory.mktemp("tune")
    full_points = (make_points("ablation", ABLATION, CATEGORIES, SEEDS)
                   + make_points("similarity_bound", LAMBDAS, CATEGORIES, SEEDS)
                   + make_points("codebook", CODEBOOK, CATEGORIES, [0])
                   + make_points("sampling", SAMPLING, CATEGORIES, [0]))
    full_metrics = known_metrics(full_points, rng_seed=1)
    full = run_tune_experiment(root / "multi", "full", full_points, full_metrics)
    unrelated = run_unrelated_experiment(root / "multi", "unrelated")

    all_partial = make_points("ablation", [("DSR", {}), ("DSR_img", {})], ["bottle", "zipper"], SEEDS)
    by = {(p["variant"], p["category"], p["seed"]): p for p in all_partial}
    never = trial_key(by[("DSR_img", "bottle", 0)])
    failed = trial_key(by[("DSR_img", "zipper", 1)])
    unfinished = trial_key(by[("DSR", "bottle", 1)])
    ran = [p for p in all_partial if trial_key(p) != never]
    partial_metrics = known_metrics(all_partial, rng_seed=2)
    partial = run_tune_experiment(root / "partial", "partial", ran, partial_metrics, fail={failed},
                                  unfinished={unfinished})
    keys = {trial_key(p) for p in all_partial}
    return {
        "full": Experiment(full, full_points, full_metrics, {trial_key(p) for p in full_points}),
        "partial": Experiment(partial, all_partial, partial_metrics, keys - {never, failed, unfinished},
                              {failed: "failed", unfinished: "incomplete", never: "never started"}),
        "unrelated": Experiment(unrelated, [], {}, set()),
    }


@pytest.fixture(scope="session")
def full_report(experiments, tmp_path_factory) -> Path:
    from reports import build_report

    return build_report(experiments["full"].path, tmp_path_factory.mktemp("report_full"))


@pytest.fixture(scope="session")
def partial_report(experiments, tmp_path_factory) -> Path:
    from reports import build_report

    return build_report(experiments["partial"].path, tmp_path_factory.mktemp("report_partial"))
