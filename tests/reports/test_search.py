"""Search reports: a real OptunaSearch + ASHA run whose trials report known values; stopped trials show as stopped
with their iteration and last value, every searched parameter is a column, importances find the parameter that
matters, and search_/report_ metric keys are preferred when a study writes them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from reports_testkit import read_markdown_table

from dsr.evaluation.records import EvaluationRecords, save_records
from reports.search import (flatten, is_searched, parameter_importances, read_history, search_report,
                            searched_params, write_search)

STRATEGIES = ("similarity_bound", "distance_band", "uniform")
QUALITY = {"similarity_bound": 0.9, "distance_band": 0.7, "uniform": 0.6}  # final image AUROC of each strategy
STEPS = 4  # interim reports per trial; ASHA may stop a trial after any of them
REPORT_GAP = 0.05  # the final result also carries report_image_auroc (the report part) = quality - REPORT_GAP
# Evaluated first, in this order, one trial at a time: the first sets ASHA's rungs, the worse ones are stopped.
FIRST = [{"overrides/sampling_strategy": "similarity_bound", "overrides/similarity_bound": 0.05},
         {"overrides/sampling_strategy": "uniform"},
         {"overrides/sampling_strategy": "distance_band", "overrides/sampling_params/low": 0.2,
          "overrides/sampling_params/high": 0.6}]


def _records(quality: float, n: int = 20) -> EvaluationRecords:
    """Per-image records whose classes overlap more the lower `quality` is."""
    rng = np.random.default_rng(0)
    labels = np.array([0, 1] * (n // 2), np.int8)
    zeros = np.zeros((n, 4, 4), np.uint8)
    return EvaluationRecords(
        paths=np.array([f"x/{i}.png" for i in range(n)]), defect_types=np.where(labels, "crack", "good"),
        labels=labels, image_scores=(rng.normal(size=n) + 4 * (quality - 0.5) * labels).astype(np.float32),
        pixel_scores=np.zeros((n, 4), np.float16), pixel_labels=np.zeros((n, 4), bool), has_masks=False,
        center_crop=0, images=np.zeros((n, 4, 4, 3), np.uint8), masks=zeros, maps=zeros)


class _Space:
    """The sampling study's define-by-run space (same parameter names as studies/sampling.py)."""

    def __call__(self, trial) -> None:
        strategy = trial.suggest_categorical("overrides/sampling_strategy", list(STRATEGIES))
        if strategy == "similarity_bound":
            trial.suggest_float("overrides/similarity_bound", 0.01, 0.5, log=True)
        if strategy == "distance_band":
            low = trial.suggest_float("overrides/sampling_params/low", 0.05, 0.5)
            trial.suggest_float("overrides/sampling_params/high", low + 0.05, 1.0)


@pytest.fixture(scope="module")
def searched(ray_session, tmp_path_factory) -> Path:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    qualities = dict(QUALITY)
    records = {name: str(save_records(_records(quality), tmp_path_factory.mktemp("records") / "records.npz"))
               for name, quality in QUALITY.items()}

    def trainable(config) -> None:  # nested: pickled by value (with `qualities`, `records`) for the Ray workers
        import shutil
        import tempfile

        from ray import tune as _tune

        quality = qualities[config["overrides"]["sampling_strategy"]]
        for step in range(1, STEPS + 1):  # interim evaluations rise towards the final value
            _tune.report({"stage": "stage2", "stage_iteration": 100 * step, "image_auroc": quality * step / 4})
        final = {"stage": "done", "image_auroc": quality, "image_ap": quality, "pixel_auroc": quality,
                 "pixel_ap": quality - 0.2, "aupro": quality, "report_image_auroc": quality - REPORT_GAP}
        with tempfile.TemporaryDirectory() as folder:  # records.npz in the final checkpoint, as the trainable
            shutil.copy(records[config["overrides"]["sampling_strategy"]], Path(folder) / "records.npz")
            _tune.report(final, checkpoint=_tune.Checkpoint.from_directory(folder))

    storage = tmp_path_factory.mktemp("search")
    searcher = OptunaSearch(space=_Space(), metric="image_auroc", mode="max", points_to_evaluate=FIRST, seed=3)
    constants = {"study": "sampling", "variant": "DSR", "category": "bottle", "seed": 0, "dataset": "mvtec",
                 "preset": "tiny"}
    tune.Tuner(trainable, param_space=constants,
               tune_config=tune.TuneConfig(metric="image_auroc", mode="max", search_alg=searcher, num_samples=7,
                                           max_concurrent_trials=1,
                                           scheduler=ASHAScheduler(time_attr="training_iteration", grace_period=1,
                                                                   reduction_factor=2, max_t=STEPS + 1)),
               run_config=tune.RunConfig(storage_path=str(storage), name="search", verbose=0)).fit()
    return storage / "search"


def test_stopped_trials_are_shown_stopped_with_their_iteration_and_last_value(searched) -> None:
    from reports.load import load_experiment

    trials = load_experiment(searched)
    assert is_searched(trials)
    report = search_report(trials)
    frame = report.trials
    assert len(frame) == 7
    stopped = frame[frame["state"].str.startswith("stopped")]
    assert len(stopped) >= 2  # the uniform and distance_band trials after the first one
    for row in stopped.itertuples():
        history = read_history(trials.set_index("trial_id").loc[row.trial_id, "path"])
        assert row.state.startswith(f"stopped at iteration {int(history['training_iteration'].iloc[-1])}")
        assert row.last_search == pytest.approx(history["image_auroc"].iloc[-1])
        assert np.isnan(row.final)
    done = frame[frame["state"] == "done"]
    for row in done.itertuples():  # the report part's value, not the plain key's
        assert row.final == pytest.approx(QUALITY[row.sampling_strategy] - REPORT_GAP)
    loaded = trials.set_index("trial_id")
    assert set(loaded.loc[stopped["trial_id"], "status"]) == {"stopped"}
    for row in done.itertuples():
        assert loaded.loc[row.trial_id, "image_auroc"] == pytest.approx(row.final)
        assert loaded.loc[row.trial_id, "image_ap"] == pytest.approx(QUALITY[row.sampling_strategy])
    assert frame["final"].dropna().is_monotonic_decreasing  # best first


def test_every_searched_parameter_is_a_column_and_undrawn_ones_are_marked(searched, tmp_path) -> None:
    from reports.load import load_experiment

    report = search_report(load_experiment(searched))
    assert report.params[0] == "sampling_strategy"
    assert {"similarity_bound", "sampling_params/low", "sampling_params/high"} <= set(report.params)
    out = tmp_path / "out"
    section = write_search(report, "sampling", "Sampling", out / "tables", out / "figures",
                           lambda p: p.relative_to(out).as_posix())
    table = (out / "tables" / "sampling-search-trials.md").read_text(encoding="utf-8")
    for header in ("strategy", "λs", "low", "high", "last interim image AUROC", "final image AUROC"):
        assert f" {header} " in table
    assert "stopped at iteration" in table and "missing" not in table
    rows = read_markdown_table(out / "tables" / "sampling-search-trials.md")
    uniform = [row for row in rows if row["strategy"] == "uniform"]
    assert uniform and all(row["λs"] == row["low"] == row["high"] == "–" for row in uniform)  # not drawn
    banded = [row for row in rows if row["strategy"] == "distance_band"]
    assert banded and all(float(row["low"]) < float(row["high"]) for row in banded)
    assert (out / "figures" / "sampling-search-params.png").stat().st_size > 5000
    assert "search-params.png" in section and "Best configurations" in section
    best = read_markdown_table(out / "tables" / "sampling-search-best.md")
    assert best and all(row["state"] == "done" for row in best)
    for row in best:  # the final value with its 95% interval over the trial's test images
        low, high = (float(v) for v in row["final image AUROC 95% CI"].strip("[]").split(","))
        assert low <= float(row["final image AUROC"]) <= high and high > low


def test_search_and_report_prefixes_are_preferred(tmp_path) -> None:
    trial = tmp_path / "trial"
    trial.mkdir()
    results = [{"stage": "stage2", "training_iteration": 1, "image_auroc": 0.5, "search_image_auroc": 0.61},
               {"stage": "stage2", "training_iteration": 2, "image_auroc": 0.5, "search_image_auroc": 0.72},
               {"stage": "done", "training_iteration": 3, "image_auroc": 0.99, "search_image_auroc": 0.8,
                "report_image_auroc": 0.83}]
    (trial / "result.json").write_text("\n".join(json.dumps(r) for r in results) + "\n{\"stage\": \"do",
                                       encoding="utf-8")  # a half-written last line is skipped
    trials = pd.DataFrame([{"trial_id": "t", "category": "c", "seed": 0, "status": "done", "tune_status": "TERMINATED",
                            "overrides": json.dumps({"sampling_strategy": "uniform"}), "path": str(trial)}])
    row = search_report(trials).trials.iloc[0]
    assert row["final"] == pytest.approx(0.83) and row["last_search"] == pytest.approx(0.72)
    assert row["state"] == "done"


def test_importances_rank_the_parameter_that_matters() -> None:
    rng = np.random.default_rng(0)
    n = 24
    frame = pd.DataFrame({"sampling_strategy": ["distance_band"] * n, "sampling_params/low": rng.uniform(0.05, 0.5, n),
                          "sampling_params/high": rng.uniform(0.55, 1.0, n)})
    frame["final"] = 0.9 - frame["sampling_params/low"] + 0.001 * rng.normal(size=n)  # only low matters
    importances, note = parameter_importances(frame, ("sampling_strategy", "sampling_params/low",
                                                      "sampling_params/high"))
    scoped = importances[importances["scope"] == "all"].set_index("parameter")["importance"]
    assert scoped["sampling_params/low"] > 0.8 > scoped["sampling_params/high"]
    few, why = parameter_importances(frame.head(3), ("sampling_params/low",))
    assert few.empty and "at least" in why


def test_flatten_and_searched_params() -> None:
    assert flatten({"a": 1, "p": {"low": 0.1, "q": {"r": 2}}}) == {"a": 1, "p/low": 0.1, "p/q/r": 2}
    params = pd.DataFrame([{"sampling_strategy": "uniform", "fixed": 1},
                           {"sampling_strategy": "distance_band", "fixed": 1, "sampling_params/low": 0.2}])
    assert searched_params(params) == ("sampling_strategy", "sampling_params/low")


def test_the_report_of_a_searched_study_has_its_search_section(searched, tmp_path) -> None:
    from reports import build_report

    report = build_report(searched, tmp_path / "report").read_text(encoding="utf-8")
    assert "### Sampling strategy (mvtec, preset tiny): search" in report
    assert "stopped early by the scheduler" in report
    assert "stopped early by the scheduler." in report and "incomplete" not in report  # the tables' counts
    assert "missing" not in report.split("Values are")[0]  # stopped by ASHA by design: not missing
    image = tmp_path / "report" / "figures" / "sampling-mvtec-tiny-search-params.png"
    assert image.is_file() and "figures/sampling-mvtec-tiny-search-params.png" in report
    trials = read_markdown_table(tmp_path / "report" / "tables" / "sampling-mvtec-tiny-search-trials.md")
    assert sum(row["state"].startswith("stopped at iteration") for row in trials) >= 2


def test_grid_studies_are_not_searched(experiments) -> None:
    from reports.load import load_experiment

    for name in ("full", "partial"):  # the partial one has a trial that ended without a final result
        trials = load_experiment(experiments[name].path)
        assert not any(is_searched(group) for _, group in trials.groupby("study"))


def test_the_sampling_baseline_is_the_papers_strategy_at_its_lambda() -> None:
    from reports.tables import baseline_label

    summary = pd.DataFrame({"sampling": ["distance_band(high=0.6, low=0.2)", "similarity_bound", "similarity_bound",
                                         "uniform"],
                            "lambda_s": [0.05, 0.2, 0.05, 0.05], "label": ["band", "sb 0.2", "sb 0.05", "uniform"]})
    assert baseline_label(summary) == "sb 0.05"
    assert baseline_label(summary[summary["label"] != "sb 0.05"]) == "sb 0.2"  # the strategy, at another λs
    assert baseline_label(summary[summary["sampling"] != "similarity_bound"]) == "band"  # else the first
