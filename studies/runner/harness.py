"""The shared study harness: one command line, every check before any trial starts, Ray Tune, the report.

A study file declares a `Study` (its name, its search space, optionally a searcher and scheduler) and calls
`main(STUDY)`. Everything else — where Ray runs, data, seeds, storage, resume, fault tolerance, the report — is
the runner's, the same for every study; this module only puts its parts in order:

    cli (options) -> space (trial configurations) -> data_checks -> experiment (files, resume checks)
        -> tuner (Ray: stage-1 phase, main trials) -> report
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any

from studies.runner.cli import build_parser, check_options
from studies.runner.data_checks import check_data, resolve_data, test_sets_have_masks
from studies.runner.experiment import check_experiment, search_split
from studies.runner.objective import resolve_metrics
from studies.runner.report import build_study_report
from studies.runner.space import build_param_space, validate_space
from studies.runner.study import METRIC, MODE, Study, StudyError


@dataclass
class Plan:
    """A study checked and ready for Ray: what runs (its param space), on which data, into which folder."""

    args: argparse.Namespace
    name: str
    data_root: str
    categories: list[str]
    space: dict[str, Any]
    count: int  # grid points; 0 for a searched study
    experiment: str


def plan_study(study: Study, args: argparse.Namespace) -> Plan:
    """Every check that needs no Ray, in order: options, data and categories, every trial configuration, every
    image and mask, the experiment folder. StudyError (one line) for the first bad input; nothing is written."""
    name = args.name or study.name
    check_options(args)
    data_root, categories = resolve_data(args, study)
    if hasattr(args, "metric"):  # a searched study: its metric(s), `auto` resolved by whether the data has masks
        args.search_metrics = list(resolve_metrics(args.metric, test_sets_have_masks(data_root, categories, args)))
    space = build_param_space(study, args, data_root, categories)
    count = validate_space(space, study, args)
    check_data(data_root, categories, args)
    experiment = check_experiment(args, name)
    return Plan(args, name, data_root, categories, space, count, experiment)


def run_study(study: Study, argv: list[str] | None = None) -> int:
    """Parse, check, run on Ray Tune, report. Returns the process exit code: 0, 1 (trials failed) or 2 (bad input,
    one `error:` line on stderr, before Ray or any trial started)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(study).parse_args(argv)
    try:
        if args.cluster:
            check_options(args)
            return _run_on_cluster(study, args, argv)
        plan = plan_study(study, args)
    except (StudyError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    what = f"{plan.count} trial configurations" if plan.count else (
        f"searched on {', '.join(getattr(args, 'search_metrics', []))}, each configuration on "
        f"{getattr(args, 'repeats', 1)} seed(s) of each category")
    print(f"{study.name}: {what}, categories {', '.join(plan.categories)}, preset {args.preset}, results in "
          f"{plan.experiment}", flush=True)
    from studies.runner.tuner import run_tuner  # Ray: only once the input is known to be good

    try:
        test_split = (search_split(study, args, plan.data_root, plan.categories, plan.experiment)
                      if plan.count == 0 or study.split_test else None)
        errors = run_tuner(study, args, plan.space, plan.categories, plan.name, test_split)
    except StudyError as error:  # before the main trials start (--address unreachable, stage 1 interrupted)
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not args.no_report:
        build_study_report(plan.experiment)
    if errors:
        print(f"{study.name}: {errors} trial(s) failed; see the errors above and {plan.experiment}", file=sys.stderr)
        return 1
    return 0


def _run_on_cluster(study: Study, args: argparse.Namespace, argv: list[str]) -> int:
    from studies.runner.launch import run_cluster_command

    return run_cluster_command(study.name, args, argv)  # checks raise ValueError (one line) before anything starts


def main(study: Study) -> None:
    """Entry point of a study file."""
    sys.exit(run_study(study))


__all__ = ["METRIC", "MODE", "Plan", "Study", "StudyError", "build_parser", "main", "plan_study", "run_study"]
