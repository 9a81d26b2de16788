"""A searched study tunes on one part of the test set and reports on the other: the split is saved with the
experiment, interim (search) and final (report) evaluations use disjoint images, ASHA runs on the training clock."""

from __future__ import annotations

import json

import pytest
from study_run import StudyRun, error_lines, is_done, read_results


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory):
    storage = tmp_path_factory.mktemp("storage")
    run = StudyRun("sampling", ["--preset", "tiny", "--num-samples", "3", "--strategies", "uniform",
                                "similarity_bound", "--storage", str(storage), "--name", "search", "--no-report"],
                   tmp_path_factory.mktemp("logs"))
    try:
        yield run, run.wait(timeout=240), storage / "search"
    finally:
        run.end()


def test_split_is_saved_disjoint_and_stratified(searched) -> None:
    run, code, experiment = searched
    assert code == 0, run.output_tail()
    assert error_lines(run.stderr) == []
    document = json.loads((experiment / "test_split.json").read_text())
    parts = document["categories"]["brick"]
    assert document["search_fraction"] == 0.5 and not set(parts["search"]) & set(parts["report"])
    for kind in {name.split("/")[0] for name in parts["search"] + parts["report"]}:
        assert any(n.startswith(kind + "/") for n in parts["search"])
        assert any(n.startswith(kind + "/") for n in parts["report"])


def test_finished_trials_carry_report_and_search_metrics_on_the_training_clock(searched) -> None:
    run, code, experiment = searched
    trials = read_results(experiment)
    finished = [rows for rows in trials.values() if is_done(rows)]
    assert finished, run.output_tail()
    for rows in finished:
        final = rows[-1]
        assert 0.0 <= final["report_image_auroc"] <= 1.0
        assert final["image_auroc"] == final["search_image_auroc"]  # the searcher only ever sees the search part
        clock = [r["train_iteration"] for r in rows]
        assert clock == sorted(clock) and clock[-1] == 4 + 2  # tiny: 4 stage-2 + 2 stage-3 iterations


def test_resume_keeps_the_saved_split(searched, tmp_path) -> None:
    from studies.runner.harness import search_split

    run, code, experiment = searched
    saved = json.loads((experiment / "test_split.json").read_text())["categories"]

    class Args:  # only what search_split reads; a different fraction must not redraw a saved split
        preset, dataset, search_fraction = "tiny", "demo", 0.3

    assert search_split(None, Args, "unused", ["brick"], str(experiment)) == {"brick": saved["brick"]}
