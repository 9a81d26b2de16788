"""Cost accounting and provenance: numbers recomputed by hand from known trial reports."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from dsr.provenance import COMMIT_ENV, DIRTY_ENV, code_environment, code_version
from reports.cost import cost_table, idle_share, one_more_seed, trial_cost
from reports.provenance import code_label, provenance_lines


def _history(times: dict[str, list[float]], cpus: float = 2.0, gpus: float = 0.0) -> pd.DataFrame:
    rows = [{"stage": stage, "time_total_s": t} for stage, clock in times.items() for t in clock]
    rows[0].update(cpus=cpus, gpus=gpus, host="node-a", cpu_model="Some CPU", gpu_model=None)
    return pd.DataFrame(rows)


def test_stage_times_are_differences_of_the_trial_clock() -> None:
    cost = trial_cost(_history({"stage1": [1.0], "stage2": [10.0, 40.0], "stage3": [55.0, 70.0], "done": [75.5]}))
    assert cost["time_stage1_s"] == 1.0 and cost["time_stage2_s"] == 39.0 and cost["time_stage3_s"] == 30.0
    assert cost["time_eval_s"] == 5.5 and cost["wall_s"] == 75.5
    assert (cost["cpus"], cost["gpus"], cost["cpu_model"]) == (2.0, 0.0, "Some CPU")


def test_a_trial_without_timing_has_no_cost() -> None:
    assert all(math.isnan(v) for v in trial_cost(pd.DataFrame({"stage": ["done"]})).values())
    assert math.isnan(trial_cost(None)["wall_s"])


def _trials() -> pd.DataFrame:
    rows = []
    for i, (variant, category, seed, wall, cpus, gpus) in enumerate([
            ("DSR", "brick", 0, 3600.0, 2.0, 0.0), ("DSR", "brick", 1, 1800.0, 2.0, 0.0),
            ("DSR_U-", "grass", 0, 7200.0, 1.0, 0.5), ("DSR_U-", "grass", 1, math.nan, math.nan, math.nan)]):
        rows.append({"trial_id": f"t{i}", "experiment": "exp", "study": "ablation", "params": variant,
                     "category": category, "seed": seed, "wall_s": wall, "cpus": cpus, "gpus": gpus})
    return pd.DataFrame(rows)


def test_hours_sum_per_group_and_untimed_trials_add_nothing() -> None:
    table = cost_table(_trials(), ["study", "params"]).set_index("params")
    assert table.loc["DSR", "cpu_hours"] == pytest.approx(2.0 + 1.0)
    assert table.loc["DSR_U-", "cpu_hours"] == pytest.approx(2.0)  # the untimed trial is not counted as 0 hours
    assert table.loc["DSR_U-", "gpu_hours"] == pytest.approx(1.0)
    assert table.loc["DSR_U-", "trials"] == 2


def test_one_more_seed_is_the_mean_cost_of_a_seed() -> None:
    seed = one_more_seed(_trials()).set_index("study")
    assert seed.loc["ablation", "cpu_hours"] == pytest.approx(((2.0 + 2.0) + 1.0) / 2)  # seed 0: 4 h, seed 1: 1 h


def test_idle_share() -> None:
    assert idle_share(3.0, 2.0, 2.0) == pytest.approx(0.25)
    assert math.isnan(idle_share(3.0, math.nan, 2.0))


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                   capture_output=True)


def test_code_version_names_the_commit_and_uncommitted_changes(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(COMMIT_ENV, raising=False)
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    _git(tmp_path, "add", "a.py")
    _git(tmp_path, "commit", "-qm", "one")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert code_version(tmp_path)["commit"] == head and code_version(tmp_path)["dirty"] is False
    (tmp_path / "b.py").write_text("y = 2\n")  # a new module changes results too
    assert code_version(tmp_path)["dirty"] is True
    # a Ray job's node has no .git: the launcher's environment carries the commit there
    monkeypatch.setenv(COMMIT_ENV, "abc123"), monkeypatch.setenv(DIRTY_ENV, "0")
    assert code_version(tmp_path / "nowhere") == {**code_version(tmp_path), "commit": "abc123", "dirty": False}
    monkeypatch.delenv(COMMIT_ENV)
    assert code_environment(tmp_path) == {COMMIT_ENV: head, DIRTY_ENV: "1"}


def test_header_flags_experiments_that_ran_different_code() -> None:
    doc = {"code": {"version": "0.1.0", "commit": "a" * 40, "dirty": False}, "libraries": {"torch": "2.14.1"},
           "preset": "small", "command": ["studies/ablation.py"]}
    other = {**doc, "code": {"version": "0.1.0", "commit": "b" * 40, "dirty": True}}
    trials = pd.DataFrame({"cpu_model": ["AMD EPYC", "AMD EPYC"], "gpu_model": [None, None]})
    same = "\n".join(provenance_lines({"one": doc, "two": doc}, trials))
    assert "different code" not in same and "AMD EPYC (2 trials)" in same and "torch 2.14.1" in same
    mixed = "\n".join(provenance_lines({"one": doc, "two": other, "old": None}, trials))
    assert "different code" in mixed and code_label(other["code"]) in mixed and "no provenance recorded" in mixed
    assert code_label(other["code"]) == "dsr-studies 0.1.0 at bbbbbbbb (uncommitted changes)"
