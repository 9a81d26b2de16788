"""A search's configurations over their runs (mean and t interval), the Pareto front, and the report's wording:
stopped trials are not missing, labels round their numbers, a search without the paper's DSR has no baseline."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from reports.build import _headline
from reports.configurations import configurations, mean_interval, pareto_front
from reports.tables import MissingCount, baseline_label, condition_labels, round_numbers

FP32 = 1e-6  # values pass through float32 metrics: agreement to ~1e-7 relative, 1e-6 leaves room


def test_the_interval_is_students_t_over_the_runs() -> None:
    mean, low, high = mean_interval(np.array([0.8, 0.9, 1.0]))
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t(0.975, 2) * s / sqrt(n), s = 0.1
    assert mean == pytest.approx(0.9, abs=FP32)
    assert (low, high) == (pytest.approx(0.9 - half, abs=FP32), pytest.approx(0.9 + half, abs=FP32))
    assert math.isnan(mean_interval(np.array([0.7]))[1]) and math.isnan(mean_interval(np.array([]))[0])


def test_configurations_group_runs_and_average_the_finished_ones() -> None:
    trials = pd.DataFrame({
        "strategy": ["a", "a", "a", "b", "b"], "seed": [0, 1, 2, 0, 1],
        "status": ["done", "done", "stopped", "done", "done"],
        "state": ["done", "done", "stopped at iteration 2", "done", "done"],
        "final": [0.8, 1.0, math.nan, 0.5, 0.7], "final_pixel_ap": [0.2, 0.4, math.nan, 0.6, 0.6]})
    configs = configurations(trials, ("strategy",), ("image_auroc", "pixel_ap")).set_index("strategy")
    assert configs.loc["a", ["runs", "done", "stopped"]].tolist() == [3, 2, 1]
    assert configs.loc["a", "image_auroc"] == pytest.approx(0.9, abs=FP32) and configs.loc["a", "image_auroc_n"] == 2
    assert configs.loc["b", "pixel_ap"] == pytest.approx(0.6, abs=FP32)
    assert configs.loc["b", "pixel_ap_low"] == pytest.approx(0.6, abs=FP32)  # no spread: a zero-width interval
    assert list(configs.index) == ["a", "b"]  # best first by the first metric


def test_the_pareto_front_keeps_exactly_the_undominated_configurations() -> None:
    frame = pd.DataFrame({"x": [0.9, 0.8, 0.7, 0.6, math.nan], "y": [0.1, 0.5, 0.4, 0.6, 0.9]})
    assert pareto_front(frame, ("x", "y")).tolist() == [True, True, False, True, False]


def test_stopped_trials_are_not_missing_in_the_headline_or_the_tables() -> None:
    count = MissingCount(expected=6, done=1, by_reason={"stopped": 5, "failed": 0, "never started": 0})
    assert count.missing == 0
    assert count.sentence() == "1 of 6 trials done, 5 stopped early by the scheduler."
    partly = MissingCount(expected=6, done=1, by_reason={"stopped": 4, "failed": 1, "never started": 0})
    assert partly.sentence() == ("1 of 6 trials done, 4 stopped early by the scheduler; 1 of 6 trials missing "
                                 "(1 failed).")
    assert "missing" not in _headline(6, 1, 5, 0) and "5 stopped early" in _headline(6, 1, 5, 0)
    assert _headline(8, 5, 0, 3) == "5 of 8 trials done. **3 missing.**"
    assert _headline(4, 4, 0, 0) == "All 4 trials done."


def test_the_headline_counts_a_configuration_the_search_drew_twice() -> None:
    """A search that drew one configuration twice ran 36 trials for 33 cells: the headline says both, so that it
    agrees with Tune's count and the search section's."""
    line = _headline(33, 14, 19, 0, reruns=3)
    assert line.startswith("14 of 33 trials done, 19 stopped early") and "3 more ran a configuration" in line
    assert "36 in all" in line and "missing" not in line
    assert "more ran" not in _headline(33, 14, 19, 0)


def test_labels_round_numbers_unless_that_would_merge_two_conditions() -> None:
    assert round_numbers("similarity_bound=0.14822078559090424") == "similarity_bound=0.148"
    assert round_numbers("uniform(low=0.5, high=1.0), K=4096") == "uniform(low=0.5, high=1), K=4096"
    keys = [{"other_overrides": "similarity_bound=0.14822"}, {"other_overrides": "similarity_bound=0.14839"}]
    assert condition_labels(keys) == ["similarity_bound=0.1482", "similarity_bound=0.1484"]


def test_a_search_that_never_ran_the_papers_lambda_has_no_baseline() -> None:
    summary = pd.DataFrame({"sampling": ["similarity_bound", "similarity_bound", "uniform"],
                            "lambda_s": [0.148, 0.3, 0.05], "label": ["sb 0.148", "sb 0.3", "uniform"]})
    assert baseline_label(summary) == ""
    summary.loc[1, "lambda_s"] = 0.05
    assert baseline_label(summary) == "sb 0.3"
