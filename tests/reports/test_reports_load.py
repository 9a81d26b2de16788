"""load_experiment: Tune's result API -> one row per trial with effective config, status and final metrics."""

from __future__ import annotations

import math

import pytest

from dsr.config import preset
from reports import find_experiments, load_experiment
from reports_testkit import trial_key


def _key(row) -> str:
    return "|".join([row["study"], row["variant"], row["overrides"], row["category"], str(row["seed"])])


def test_one_row_per_trial_with_known_metrics_and_effective_config(experiments):
    exp = experiments["full"]
    trials = load_experiment(exp.path)
    assert len(trials) == len(exp.points) and trials["trial_id"].is_unique
    assert set(trials["status"]) == {"done"}
    small = preset("small")
    for _, row in trials.iterrows():
        key = _key(row)
        for metric, value in exp.metrics[key].items():
            assert row[metric] == pytest.approx(value)
        overrides = next(p["overrides"] for p in exp.points if trial_key(p) == key)
        assert row["lambda_s"] == overrides.get("similarity_bound", small.similarity_bound)
        assert row["codebook_size"] == overrides.get("codebook_size", small.codebook_size)
    random_rows = trials[trials["variant"] == "DSR_random"]
    assert len(random_rows) and set(random_rows["sampling_strategy"]) == {"uniform"}  # set by the variant


def test_partial_experiment_has_status_and_nan_metrics(experiments):
    exp = experiments["partial"]
    trials = load_experiment(exp.path)
    by_key = {_key(row): row for _, row in trials.iterrows()}
    for key, status in exp.statuses.items():
        if status == "never started":
            assert key not in by_key
            continue
        assert by_key[key]["status"] == status
        assert all(math.isnan(by_key[key][m]) for m in exp.metrics[key])
    assert sum(trials["status"] == "done") == len(exp.done)


def test_a_folder_of_experiments_reads_ours_and_notes_the_unrelated_one(experiments):
    root = experiments["full"].path.parent
    assert [p.name for p in find_experiments(root)] == ["full", "unrelated"]
    trials = load_experiment(root)
    assert len(trials) == len(experiments["full"].points)
    assert trials.attrs["experiments"] == ["full"]
    assert any("unrelated" in note and "study" in note for note in trials.attrs["notes"])


def test_empty_missing_and_unrelated_folders_raise_one_line_errors(experiments, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_experiment(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an experiment")
    with pytest.raises(ValueError, match="no Ray Tune experiment") as error:
        load_experiment(tmp_path / "empty")
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="study") as error:
        load_experiment(experiments["unrelated"].path)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="not a directory"):
        load_experiment(tmp_path / "empty" / "notes.txt")
