"""One real multi-objective, repeated, tracked search (tiny preset): every configuration runs on two seeds, the
Optuna study is a journal in the experiment holding the means, MLflow's local store holds every trial's metrics,
and the report shows the configurations over their runs, the Pareto front and the stopped trials as stopped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from study_run import StudyRun, error_lines, is_done, read_results, wait_until

pytestmark = pytest.mark.slow  # one real searched study, shared by the module's tests

SAMPLES, REPEATS = 2, 2
METRICS = ["image_auroc", "pixel_ap"]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory):
    storage = tmp_path_factory.mktemp("storage")
    run = StudyRun("sampling", ["--preset", "tiny", "--num-samples", str(SAMPLES), "--repeats", str(REPEATS),
                                "--metric", *METRICS, "--strategies", "similarity_bound", "uniform",
                                "--tracker", "mlflow", "--storage", str(storage), "--name", "tools"],
                   tmp_path_factory.mktemp("logs"))
    try:
        yield run, run.wait(timeout=600), storage / "tools"
    finally:
        run.end()


def test_every_configuration_runs_on_every_seed_and_the_baseline_first(study) -> None:
    run, code, experiment = study
    assert code == 0, run.output_tail()
    assert error_lines(run.stderr) == []
    configs = [json.loads((experiment / name / "params.json").read_text()) for name in read_results(experiment)]
    assert len(configs) == SAMPLES * REPEATS
    by_config: dict[str, list[int]] = {}
    for config in configs:
        by_config.setdefault(json.dumps(config["overrides"], sort_keys=True), []).append(config["seed"])
    assert sorted(sorted(seeds) for seeds in by_config.values()) == [[0, 1]] * SAMPLES
    baseline = json.dumps({"sampling_strategy": "similarity_bound", "similarity_bound": 0.05}, sort_keys=True)
    assert baseline in by_config
    baseline_runs = [rows for name, rows in read_results(experiment).items()
                     if json.dumps(json.loads((experiment / name / "params.json").read_text())["overrides"],
                                   sort_keys=True) == baseline]
    assert all(is_done(rows) for rows in baseline_runs)  # ASHA never stops the baseline


def test_the_optuna_journal_holds_each_configurations_mean_of_both_metrics(study) -> None:
    import optuna

    from studies.runner.optuna_store import optuna_storage

    run, code, experiment = study
    stored = optuna.load_study(study_name="tools", storage=optuna_storage(experiment / "optuna" / "journal.log"))
    assert len(stored.directions) == 2 and len(stored.trials) == SAMPLES
    results = read_results(experiment)
    for trial in stored.trials:
        assert trial.state.name == "COMPLETE"
        runs = [rows[-1] for name, rows in results.items()
                if json.loads((experiment / name / "params.json").read_text())["overrides"].get("sampling_strategy")
                == trial.params["overrides/sampling_strategy"]
                and json.loads((experiment / name / "params.json").read_text())["overrides"].get("similarity_bound")
                == trial.params.get("overrides/similarity_bound")]
        assert len(runs) == REPEATS
        for index, metric in enumerate(METRICS):  # the mean of each run's last result (as Tune gave it)
            expected = sum(r[metric] for r in runs) / REPEATS
            assert trial.values[index] == pytest.approx(expected, abs=1e-9)  # the same float64 mean


def test_mlflow_holds_every_trials_metrics(study) -> None:
    from mlflow.tracking import MlflowClient

    run, code, experiment = study
    client = MlflowClient(tracking_uri=f"sqlite:///{experiment / 'mlflow.db'}")
    mlflow_experiment = client.get_experiment_by_name("tools")
    runs = client.search_runs([mlflow_experiment.experiment_id])
    assert len(runs) == SAMPLES * REPEATS
    finals = {rows[-1]["trial_id"]: rows[-1] for rows in read_results(experiment).values()}
    for mlflow_run in runs:
        trial_id = mlflow_run.data.tags.get("trial_name", mlflow_run.info.run_name).rsplit("_", 1)[-1]
        final = finals[trial_id]
        assert mlflow_run.data.metrics["train_iteration"] == pytest.approx(final["train_iteration"])
        assert mlflow_run.data.metrics["image_auroc"] == pytest.approx(final["image_auroc"], abs=1e-9)
        history = client.get_metric_history(mlflow_run.info.run_id, "train_iteration")
        assert len(history) >= 2  # every result, not only the last


def test_the_report_shows_runs_pareto_front_and_stopped_not_missing(study) -> None:
    run, code, experiment = study
    text = (experiment / "report" / "report.md").read_text()
    assert "Pareto front of image AUROC and pixel AP" in text
    assert "Each configuration over its runs" in text
    assert (experiment / "report" / "figures" / "sampling-demo-tiny-search-pareto.png").is_file()
    headline = text.split("Values are")[0]
    assert "missing" not in headline
    assert f"{SAMPLES * REPEATS} trials" in headline


def _one_done_one_checkpointed(experiment: Path) -> bool:
    """A configuration finished and another has two stage-2 checkpoints (Tune has snapshotted since)."""
    trials = read_results(experiment)
    done = [rows for rows in trials.values() if is_done(rows)]
    running = [rows for rows in trials.values() if rows and rows[-1]["stage"] == "stage2"
               and len([r for r in rows[:-1] if r["stage"] == "stage2" and r.get("checkpoint_dir_name")]) >= 2]
    return bool(done and running)


def test_resume_continues_the_same_optuna_study(start_study, tmp_path: Path) -> None:
    import optuna

    from studies.runner.optuna_store import optuna_storage

    storage = tmp_path / "storage"
    args = ["--preset", "tiny", "--num-samples", "3", "--strategies", "uniform", "similarity_bound",
            "--metric", "image_auroc", "--max-concurrent", "1", "--set", "stage2_iterations=60",
            "--checkpoint-every", "10", "--report-every", "5", "--storage", str(storage), "--name", "resumed",
            "--no-report"]
    experiment = storage / "resumed"
    first = start_study("sampling", args)
    wait_until(lambda: _one_done_one_checkpointed(experiment), 300, first, "one trial done, another checkpointed")
    first.kill_driver_group()
    first.kill_survivors()
    journal = experiment / "optuna" / "journal.log"
    before = optuna.load_study(study_name="resumed", storage=optuna_storage(journal))
    told = {t.number: t.value for t in before.trials if t.state.name == "COMPLETE"}
    assert told and len(told) < 3  # killed with a configuration unfinished

    second = start_study("sampling", [*args, "--resume"])
    assert second.wait(timeout=400) == 0, second.output_tail()
    after = optuna.load_study(study_name="resumed", storage=optuna_storage(journal))
    assert optuna.get_all_study_names(optuna_storage(journal)) == ["resumed"]  # one study, continued
    assert [t.state.name for t in after.trials] == ["COMPLETE"] * 3
    assert {t.number: t.value for t in after.trials if t.number in told} == told  # kept as it was
    assert after.trials[0].params == {"overrides/sampling_strategy": "similarity_bound",
                                      "overrides/similarity_bound": 0.05}  # the baseline, once
    assert len(read_results(experiment)) == 3
