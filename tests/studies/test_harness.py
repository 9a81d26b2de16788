"""The harness's own logic, in-process: --set parsing, the param space and its grid points, option checks, the
experiment files (saved options, resume checks, the saved test split) and what each trial receives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ray import tune

from studies import ablation, sampling, similarity_bound
from studies.runner.cli import build_parser
from studies.runner.experiment import (OPTIONS_FILE, SPLIT_FILE, check_experiment, check_resume_options,
                                       save_study_options, search_split)
from studies.runner.space import build_param_space, grid_points, parse_override, parse_overrides, validate_space
from studies.runner.study import StudyError


def parse(study, *argv: str):
    return build_parser(study).parse_args(["--preset", "tiny", *argv])


# ------------------------------------------------------------------------------------------------ --set


@pytest.mark.parametrize(("text", "expected"), [
    ("similarity_bound=0.2", ("similarity_bound", 0.2)),
    ("stage2_iterations=200", ("stage2_iterations", 200)),
    ("use_upsampling=false", ("use_upsampling", False)),
    ("eval_center_crop=null", ("eval_center_crop", None)),
    ('sampling_params={"low": 0.1, "high": 0.4}', ("sampling_params", {"low": 0.1, "high": 0.4})),
    ("sampling_strategy=uniform", ("sampling_strategy", "uniform")),  # not JSON: the text itself
    ("texture_dir=/data/dtd=1", ("texture_dir", "/data/dtd=1")),  # split at the first '='
])
def test_override_values_parse_as_json_where_they_can(text: str, expected: tuple) -> None:
    assert parse_override(text) == expected


@pytest.mark.parametrize(("text", "message"), [("similarity_bound", "expected FIELD=VALUE"),
                                               ("no_such_field=1", "--set no_such_field: not a DSRConfig field")])
def test_bad_overrides_are_named(text: str, message: str) -> None:
    with pytest.raises(StudyError, match=message):
        parse_override(text)


def test_a_later_set_of_a_field_wins() -> None:
    assert parse_overrides(["seed=1", "similarity_bound=0.1", "seed=2"]) == {"seed": 2, "similarity_bound": 0.1}


# ---------------------------------------------------------------------------------------- grid points


def test_grid_points_expand_nested_grids_and_keep_constants() -> None:
    space = {"a": 1, "b": tune.grid_search([2, 3]), "c": {"d": tune.grid_search(["x", "y"]), "e": None}}
    assert grid_points(space) == [
        {"a": 1, "b": b, "c": {"d": d, "e": None}} for b in (2, 3) for d in ("x", "y")]
    assert grid_points({"a": tune.grid_search([{"b": tune.grid_search([1, 2])}, 3])}) == [
        {"a": {"b": 1}}, {"a": {"b": 2}}, {"a": 3}]
    assert grid_points(5) == [5]


def test_param_space_crosses_categories_seeds_and_the_study_grid() -> None:
    args = parse(similarity_bound.STUDY, "--seeds", "2", "--set", "stage2_iterations=3", "--set",
                 "similarity_bound=0.3", "--lambdas", "0.05", "0.1")
    space = build_param_space(similarity_bound.STUDY, args, "/data", ["brick", "grass"])
    points = grid_points(space)
    assert len(points) == 2 * 2 * 2 and validate_space(space, similarity_bound.STUDY, args) == 8
    assert {(p["category"], p["seed"], p["overrides"]["similarity_bound"]) for p in points} == {
        (c, s, b) for c in ("brick", "grass") for s in (0, 1) for b in (0.05, 0.1)}  # the study's grid wins
    assert all(p["overrides"]["stage2_iterations"] == 3 and p["preset"] == "tiny" for p in points)


def test_a_searched_study_validates_its_fixed_part_and_counts_no_points() -> None:
    args = parse(sampling.STUDY, "--strategies", "uniform")
    space = build_param_space(sampling.STUDY, args, "/data", ["brick"])
    assert validate_space(space, sampling.STUDY, args) == 0
    bad = build_param_space(sampling.STUDY, parse(sampling.STUDY, "--set", "similarity_bound=3"), "/data",
                            ["brick"])
    with pytest.raises(StudyError, match="similarity_bound"):
        validate_space(bad, sampling.STUDY, args)


# ----------------------------------------------------------------------------------- experiment files


def test_resume_refuses_what_changes_the_study_and_takes_on_resources_and_intervals(tmp_path: Path) -> None:
    experiment = str(tmp_path / "ablation")
    first = parse(ablation.STUDY, "--variants", "DSR", "--storage", str(tmp_path))
    save_study_options(first, experiment)
    saved = json.loads((tmp_path / "ablation" / OPTIONS_FILE).read_text())
    assert saved["variants"] == ["DSR"] and saved["checkpoint_minutes"] == 0.0
    assert not {"storage", "name", "resume", "address", "cluster"} & set(saved)

    changed = parse(ablation.STUDY, "--variants", "DSR", "DSR_img", "--max-failures", "5", "--resume")
    with pytest.raises(StudyError) as refused:
        check_resume_options(changed, experiment)
    assert "--variants: saved ['DSR'], now ['DSR', 'DSR_img']" in str(refused.value)
    assert "--max-failures: saved 3, now 5" in str(refused.value) and "\n" not in str(refused.value)
    resources = parse(ablation.STUDY, "--variants", "DSR", "--cpus-per-trial", "2", "--checkpoint-every", "7",
                      "--checkpoint-minutes", "5", "--report-every", "1", "--no-report", "--resume",
                      "--storage", str(tmp_path / "elsewhere"))
    check_resume_options(resources, experiment)  # taken on: no error
    save_study_options(resources, experiment)  # a resumed study keeps the options it was started with
    assert json.loads((tmp_path / "ablation" / OPTIONS_FILE).read_text()) == saved


def test_a_new_study_never_overwrites_an_experiment(tmp_path: Path) -> None:
    args = parse(ablation.STUDY, "--storage", str(tmp_path))
    assert check_experiment(args, "ablation") == f"{tmp_path}/ablation"  # nothing there yet
    save_study_options(args, f"{tmp_path}/ablation")
    with pytest.raises(StudyError, match="already holds an experiment: pass --resume"):
        check_experiment(args, "ablation")
    assert check_experiment(parse(ablation.STUDY, "--storage", str(tmp_path)), "other") == f"{tmp_path}/other"
    assert check_experiment(parse(ablation.STUDY, "--storage", str(tmp_path), "--resume"), "ablation")


def test_the_search_split_is_made_once_and_reused(demo_data: Path, tmp_path: Path) -> None:
    experiment = str(tmp_path / "search")
    args = parse(sampling.STUDY, "--search-fraction", "0.5")
    made = search_split(sampling.STUDY, args, str(demo_data), ["brick"], experiment)
    parts = made["brick"]
    assert parts["search"] and parts["report"] and not set(parts["search"]) & set(parts["report"])
    for kind in {name.split("/")[0] for name in parts["search"] + parts["report"]}:  # stratified by defect type
        assert any(n.startswith(kind + "/") for n in parts["search"])
        assert any(n.startswith(kind + "/") for n in parts["report"])
    # resumed with another fraction: the saved split, not a new draw
    again = search_split(sampling.STUDY, parse(sampling.STUDY, "--search-fraction", "0.3"), str(demo_data),
                         ["brick"], experiment)
    assert again == made
    assert json.loads((tmp_path / "search" / SPLIT_FILE).read_text())["categories"]["brick"] == parts
    with pytest.raises(StudyError, match="no split for grass"):
        search_split(sampling.STUDY, args, str(demo_data), ["brick", "grass"], experiment)


# --------------------------------------------------------------------------------- what trials receive


def test_intervals_reach_the_trials_loop_schedule() -> None:
    from studies.runner.tune_io import loop_schedule
    from studies.runner.tuner import run_settings

    args = parse(ablation.STUDY, "--checkpoint-every", "7", "--checkpoint-minutes", "2.5", "--report-every", "3")
    schedule = loop_schedule(run_settings(ablation.STUDY, args, "/storage", "ablation", ["brick"]))
    assert schedule.checkpoint_minutes == 2.5 and schedule.intervals(100) == (3, 7)
    defaults = loop_schedule(run_settings(ablation.STUDY, parse(ablation.STUDY), "/storage", "ablation", ["brick"]))
    assert defaults.checkpoint_minutes == 0 and defaults.intervals(100) == (5, 20)  # about 20 reports, 5 checkpoints


def test_categories_all_takes_every_category_of_the_dataset(tmp_path: Path) -> None:
    """The default is the study's choice (one category for the ablation); `--categories all` is every category,
    as the paper's tables need (all 15 of MVTec AD)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
    from data_helpers import make_category

    from studies.runner.data_checks import resolve_data

    for category in ("bottle", "cable", "carpet"):
        make_category(tmp_path / category)
    argv = ["--dataset", "mvtec", "--data", str(tmp_path)]
    assert resolve_data(parse(ablation.STUDY, *argv), ablation.STUDY)[1] == ["bottle"]
    assert resolve_data(parse(ablation.STUDY, *argv, "--categories", "all"), ablation.STUDY)[1] == [
        "bottle", "cable", "carpet"]
