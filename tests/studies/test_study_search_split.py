"""A searched study tunes on one part of the test set and reports on the other: the split is saved with the
experiment, interim (search) and final (report) evaluations use disjoint images, ASHA runs on the training clock."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from study_run import StudyRun, error_lines, is_done, read_results

pytestmark = pytest.mark.slow  # one real searched study, shared by the module's tests


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
        clock = [r["train_iteration"] for r in rows]
        assert clock == sorted(clock) and clock[-1] == 4 + 2  # tiny: 4 stage-2 + 2 stage-3 iterations


def _final_checkpoint(trial: Path) -> Path:
    return max(trial.glob("checkpoint_*"), key=lambda path: int(path.name.rsplit("_", 1)[1]))


def test_the_searcher_sees_the_search_part_and_the_tables_the_report_part(searched) -> None:
    """Recomputed from what the trial saved: its per-image records are exactly the report part's images and give
    report_image_auroc; its final model on the search part gives image_auroc, the metric Optuna and ASHA read."""
    from dsr.checkpoints import load_checkpoint
    from dsr.evaluation.evaluate import predict_all
    from dsr.evaluation.records import load_records, test_image_name
    from studies.runner.trainable import trial_test_set
    from studies.runner.trial import RunSettings

    run, code, experiment = searched
    split = json.loads((experiment / "test_split.json").read_text())["categories"]
    settings = RunSettings(storage="unused", experiment="unused", categories=("brick",), test_split=split)
    finished = {name: rows[-1] for name, rows in read_results(experiment).items() if is_done(rows)}
    assert finished, run.output_tail()
    for name, final in finished.items():
        checkpoint = _final_checkpoint(experiment / name)
        records = load_records(checkpoint / "records.npz")
        assert sorted(records.paths.tolist()) == sorted(split["brick"]["report"])
        assert roc_auc_score(records.labels, records.image_scores) == pytest.approx(final["report_image_auroc"],
                                                                                   abs=1e-6)
        model = load_checkpoint(checkpoint / "model.pt")
        search = trial_test_set(final["config"], model.config, settings, "search")
        assert sorted(test_image_name(s.image_path) for s in search.samples) == sorted(split["brick"]["search"])
        scores, _, labels, _ = predict_all(model, search, batch_size=settings.eval_batch_size)
        low, high = auroc_within_fp32(scores, labels)  # this process's kernels may sum in another order
        assert low - 1e-9 <= final["image_auroc"] <= high + 1e-9, (name, final["image_auroc"], low, high)
        assert final["search_image_auroc"] == final["image_auroc"]


def auroc_within_fp32(scores: np.ndarray, labels: np.ndarray, relative: float = 1e-5) -> tuple[float, float]:
    """The lowest and highest image AUROC these scores can have once every anomalous/normal pair closer than fp32
    noise (the trial computed them with another thread count, so another summation order) may order either way."""
    positive, negative = scores[labels == 1].astype(np.float64), scores[labels == 0].astype(np.float64)
    difference = positive[:, None] - negative[None, :]
    tolerance = relative * max(1.0, float(np.abs(scores).max()))
    pairs = difference.size
    return (float((difference > tolerance).sum()) / pairs,
            float((difference > tolerance).sum() + (np.abs(difference) <= tolerance).sum()) / pairs)


def test_resume_keeps_the_saved_split(searched, tmp_path) -> None:
    from studies.runner.experiment import search_split

    run, code, experiment = searched
    saved = json.loads((experiment / "test_split.json").read_text())["categories"]

    class Args:  # only what search_split reads; a different fraction must not redraw a saved split
        preset, dataset, search_fraction = "tiny", "demo", 0.3

    assert search_split(None, Args, "unused", ["brick"], str(experiment)) == {"brick": saved["brick"]}
