"""A tiny ablation study end to end on the embedded Ray: trials run, results land in storage, metrics read back,
the two variants share one stage-1 model, trained once in the study's stage-1 phase before them, and the command
line's --set and checkpoint options reach every trial."""

from __future__ import annotations

import time

import pytest
import torch
from study_run import StudyRun, error_lines, is_done, read_results

from dsr.config import preset

VARIANTS = ("DSR", "DSR_U-")
STAGE1_ITERATIONS = 6
CHECKPOINT_MINUTES = 1e-6  # 60 us: every iteration outlasts it, so each report is also a checkpoint

pytestmark = pytest.mark.slow  # one real study process, shared by the module's tests
METRICS = ("image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "aupro")


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory):
    """One two-variant study (about 25 s), shared by the tests of this module; all its processes ended after."""
    storage = tmp_path_factory.mktemp("storage")
    run = StudyRun("ablation", ["--preset", "tiny", "--variants", *VARIANTS, "--storage", str(storage),
                                "--set", f"stage1_iterations={STAGE1_ITERATIONS}", "--report-every", "1",
                                "--checkpoint-every", "1000", "--checkpoint-minutes", str(CHECKPOINT_MINUTES),
                                "--no-report"], tmp_path_factory.mktemp("logs"))
    try:
        code = run.wait(timeout=180)
        deadline = time.monotonic() + 15  # Ray's own shutdown may take a moment after the driver exits
        while run.processes() and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [p.pid for p in run.processes()]
        yield run, code, storage / "ablation", left
    finally:
        run.end()


def test_trials_run_and_results_land_in_storage(study) -> None:
    run, code, experiment, _ = study
    assert code == 0, run.output_tail()
    assert error_lines(run.stderr) == [] and "trial error" not in run.stdout
    assert (experiment / "tuner.pkl").is_file()
    trials = read_results(experiment)
    assert len(trials) == len(VARIANTS)
    for name, rows in trials.items():
        assert is_done(rows), f"{name} did not finish: {rows[-1:]}"
        final = rows[-1]
        assert final["variant"] in VARIANTS and final["config"]["preset"] == "tiny"
        for metric in METRICS:
            assert 0.0 <= final[metric] <= 1.0, (name, metric, final[metric])
        assert [r["training_iteration"] for r in rows] == list(range(1, len(rows) + 1))
        stages = [r["stage"] for r in rows]
        expected = ["stage2", "stage3"] if final["variant"] == "DSR" else ["stage2"]  # DSR_U-: no stage 3
        assert [s for s in dict.fromkeys(stages) if s not in ("stage1", "done")] == expected
    assert sorted(rows[-1]["variant"] for rows in trials.values()) == sorted(VARIANTS)


def test_metrics_read_back_through_tune(study) -> None:
    from ray.tune import ExperimentAnalysis

    run, code, experiment, _ = study
    assert code == 0, run.output_tail()
    on_disk = {rows[-1]["trial_id"]: rows[-1] for rows in read_results(experiment).values()}
    analysis = ExperimentAnalysis(str(experiment))
    assert {trial.trial_id for trial in analysis.trials} == set(on_disk)
    for trial in analysis.trials:
        assert trial.status == "TERMINATED"
        assert trial.config["variant"] == on_disk[trial.trial_id]["variant"]
        for metric in METRICS:
            assert trial.last_result[metric] == pytest.approx(on_disk[trial.trial_id][metric])
        assert trial.checkpoint is not None  # the final model was checkpointed


def test_stage1_is_its_own_phase_trained_once_and_loaded_by_both_variants(study) -> None:
    run, code, experiment, _ = study
    assert code == 0, run.output_tail()
    phase = read_results(experiment / "stage1")
    assert len(phase) == 1, phase  # both variants need the same stage-1 model: one stage-1 trial
    (rows,) = phase.values()
    (key,) = {r["stage1_key"] for r in rows}
    assert [r["stage_iteration"] for r in rows if r["stage"] == "stage1"] == list(range(1, STAGE1_ITERATIONS + 1))
    assert rows[-1]["stage"] == "done"
    trials = read_results(experiment)
    for name, rows in trials.items():
        stage1_rows = [r for r in rows if r["stage"] == "stage1"]
        assert [(r["stage1_source"], r["stage1_key"]) for r in stage1_rows] == [("loaded", key)], name
        assert not [r for r in stage1_rows if r.get("stage_iteration")], "a main trial trained stage 1"
        # the phase ended before any main trial started
        assert rows[0]["timestamp"] >= phase_end(experiment), name
    stored = experiment / "stage1" / key / "latent.pt"
    latent = torch.load(stored, weights_only=True)
    assert latent and all(isinstance(v, torch.Tensor) and torch.isfinite(v.float()).all() for v in latent.values())
    assert not list(experiment.glob("stage1/*/*.partial")) and not (stored.parent / "error.txt").exists()


def test_the_command_line_reaches_the_trials(study) -> None:
    """--set: in every main trial's config, and stage 1 trained for that many iterations (not the preset's).
    --checkpoint-minutes: with --checkpoint-every far beyond the stages, only wall time can make every report of
    the stage-1 phase and of the main trials' stages 2 and 3 a checkpoint; without it, only each stage's end."""
    run, code, experiment, _ = study
    assert code == 0, run.output_tail()
    assert preset("tiny").stage1_iterations != STAGE1_ITERATIONS
    for name, rows in read_results(experiment).items():
        assert rows[-1]["config"]["overrides"] == {"stage1_iterations": STAGE1_ITERATIONS}, name
        trained = [r for r in rows if r["stage"] in ("stage2", "stage3")]
        assert trained and all(r.get("checkpoint_dir_name") for r in trained), name
    (phase,) = read_results(experiment / "stage1").values()
    stage1 = [r for r in phase if r["stage"] == "stage1"]
    assert {r["stage_total"] for r in stage1} == {STAGE1_ITERATIONS}
    assert all(r.get("checkpoint_dir_name") for r in stage1)


def test_the_stage1_phase_uses_every_cpu_of_the_machine(study) -> None:
    """The study has one stage-1 model: the phase gives it all the embedded Ray's CPUs, not a main trial's one
    (issue: the other cores idled through the default study's longest single step)."""
    import json

    run, code, experiment, _ = study
    assert code == 0, run.output_tail()
    cluster_cpus = json.loads((experiment / "provenance.json").read_text())["runs"][0]["cluster_resources"]["CPU"]
    (phase,) = read_results(experiment / "stage1").values()
    assert phase[0]["cpus"] == float(int(cluster_cpus)) >= 1.0
    if int(cluster_cpus) > 1:
        assert "CPUs for each stage-1 model" in run.stdout
    for rows in read_results(experiment).values():
        assert rows[0]["cpus"] == 1.0  # the main trials keep --cpus-per-trial


def phase_end(experiment) -> int:
    return max(r["timestamp"] for rows in read_results(experiment / "stage1").values() for r in rows)


def test_the_study_ends_its_own_ray(study) -> None:
    run, code, _, left = study
    assert code == 0, run.output_tail()
    assert left == [], f"processes of the embedded Ray still ran after the study exited: {left}"


def test_the_report_says_what_it_cost_and_what_produced_it(study, tmp_path) -> None:
    """The report's Cost section and provenance header, checked against the trials' own results (result.json)
    and the experiment's provenance.json."""
    import json

    import pandas as pd

    from reports import build_report

    run, code, experiment, _ = study
    assert code == 0, run.output_tail()
    report = build_report(experiment, tmp_path / "report").read_text()
    provenance = json.loads((experiment / "provenance.json").read_text())
    assert provenance["command"][:3] == ["studies/ablation.py", "--preset", "tiny"]
    assert [r["resumed"] for r in provenance["runs"]] == [False] and provenance["runs"][0]["cluster_resources"]["CPU"]
    commit = provenance["code"]["commit"]
    assert commit and commit[:8] in report and f"torch {provenance['libraries']['torch']}" in report
    assert "## Cost" in report and "different code" not in report

    per_trial = pd.read_csv(tmp_path / "report" / "tables" / "cost.csv").set_index("trial_id")
    for rows in read_results(experiment).values():
        trial = per_trial.loc[rows[-1]["trial_id"]]
        clock = {}
        for row in rows:  # the trial clock at each stage's last report
            clock[row["stage"]] = row["time_total_s"]
        assert trial["wall_s"] == pytest.approx(rows[-1]["time_total_s"])
        assert trial["time_stage2_s"] == pytest.approx(clock["stage2"] - clock["stage1"])
        assert trial["time_eval_s"] == pytest.approx(clock["done"] - clock[rows[-2]["stage"]])
        assert trial["cpus"] == rows[0]["cpus"] == 1.0 and trial["cpu_model"] == rows[0]["cpu_model"]
        assert trial["cpu_hours"] == pytest.approx(rows[-1]["time_total_s"] / 3600)
    studies = pd.read_csv(tmp_path / "report" / "tables" / "cost_studies.csv").iloc[0]
    (phase,) = read_results(experiment / "stage1").values()
    assert studies["stage1_trials"] == 1
    assert studies["stage1_cpu_hours"] == pytest.approx(phase[-1]["time_total_s"] * phase[0]["cpus"] / 3600)
    assert studies["main_cpu_hours"] == pytest.approx(per_trial["cpu_hours"].sum())
    assert 0.0 <= studies["idle_share"] < 1.0


def test_a_second_study_on_the_same_storage_reuses_the_first_ones_stage1(study, tmp_path) -> None:
    """One stage 1 for every study: a second experiment under the same storage root, needing the same stage-1
    model, copies it from the shared store instead of training it, and its report says so."""
    import pandas as pd

    from reports import build_report

    run, code, experiment, _ = study
    assert code == 0, run.output_tail()
    (phase,) = read_results(experiment / "stage1").values()
    key = phase[-1]["stage1_key"]
    second = StudyRun("ablation", ["--preset", "tiny", "--variants", "DSR_U-", "--storage", str(experiment.parent),
                                   "--name", "second", "--set", f"stage1_iterations={STAGE1_ITERATIONS}",
                                   "--no-report"], tmp_path / "logs")
    try:
        assert second.wait(timeout=180) == 0, second.output_tail()
    finally:
        second.end()
    assert f"stage 1 {key}: reused from" in second.stdout
    folder = experiment.parent / "second"
    assert (folder / "stage1" / key / "reused.json").is_file()
    assert not list((folder / "stage1").glob("experiment_state-*.json"))  # no stage-1 phase ran
    (rows,) = read_results(folder).values()
    assert is_done(rows) and rows[0]["stage1_key"] == key
    first = torch.load(experiment / "stage1" / key / "latent.pt", weights_only=True)
    copied = torch.load(folder / "stage1" / key / "latent.pt", weights_only=True)
    assert all(torch.equal(first[name], copied[name]) for name in first)
    build_report(folder, tmp_path / "report")
    studies = pd.read_csv(tmp_path / "report" / "tables" / "cost_studies.csv").iloc[0]
    assert (studies["stage1_trials"], studies["stage1_reused"], studies["stage1_cpu_hours"]) == (0, 1, 0.0)
