"""What a searched study optimises: `--metric` (one metric, or several for a multi-objective search) and what an
interim result carries before the model was first evaluated. No Ray in here.

Every metric is one a trial already reports (`dsr.evaluation.evaluate_model`), larger is better for each. The
default `auto` is pixel AP where the data has masks, else image AUROC: on the demo, image AUROC is 100 for most
strategies (too easy to separate them) while pixel AP spreads over 30 points (README, "What to expect").
"""

from __future__ import annotations

import argparse

from studies.runner.study import StudyError

SEARCH_METRICS = ("pixel_ap", "aupro", "image_auroc", "image_ap", "pixel_auroc")
PIXEL_METRICS = ("pixel_ap", "aupro", "pixel_auroc")
AUTO = "auto"
MODE = "max"  # every metric above: larger is better
# Before a trial's first interim evaluation: the score of an uninformative detector (AUROC 0.5) or the least
# possible one (AP, AUPRO 0), so a searcher or scheduler always finds its metric in a result.
PLACEHOLDERS = {"image_auroc": 0.5, "pixel_auroc": 0.5, "image_ap": 0.0, "pixel_ap": 0.0, "aupro": 0.0}


def add_metric_argument(parser: argparse.ArgumentParser) -> None:
    """`--metric M [M ...]`: the searched metric(s); two or more make a multi-objective (Pareto) search."""
    parser.add_argument("--metric", nargs="+", default=[AUTO], metavar="M",
                        help=f"searched metric(s): {', '.join(SEARCH_METRICS)} or {AUTO} (default: pixel_ap "
                             "where the data has masks, else image_auroc); two or more: a multi-objective "
                             "search (Optuna's multi-objective TPE), the report shows the Pareto front")


def check_metrics(given: list[str]) -> None:
    """StudyError (one line naming --metric) for an unknown, repeated or misplaced `auto` metric."""
    for name in given:
        if name != AUTO and name not in SEARCH_METRICS:
            raise StudyError(f"--metric {name}: unknown metric; choose from {', '.join(SEARCH_METRICS)} or {AUTO}")
    if len(set(given)) != len(given):
        raise StudyError(f"--metric {' '.join(given)}: a metric is given twice")
    if AUTO in given and len(given) > 1:
        raise StudyError(f"--metric {' '.join(given)}: {AUTO} stands alone (name the metrics of a "
                         "multi-objective search)")


def resolve_metrics(given: list[str], has_masks: bool) -> tuple[str, ...]:
    """The searched metrics, `auto` resolved; StudyError for a pixel metric on data without masks."""
    check_metrics(given)
    if given == [AUTO]:
        return ("pixel_ap",) if has_masks else ("image_auroc",)
    if not has_masks:
        pixel = [name for name in given if name in PIXEL_METRICS]
        if pixel:
            raise StudyError(f"--metric {pixel[0]}: the data has no masks, so pixel metrics are undefined; use "
                             "image_auroc or image_ap")
    return tuple(given)


def search_metrics(args: argparse.Namespace) -> list[str]:
    """The metrics this command line searches (resolved by the harness; `auto` alone before that: pixel AP)."""
    resolved = getattr(args, "search_metrics", None)
    if resolved:
        return list(resolved)
    given = getattr(args, "metric", [AUTO])
    return ["pixel_ap"] if given == [AUTO] else list(given)


__all__ = ["AUTO", "MODE", "PLACEHOLDERS", "SEARCH_METRICS", "add_metric_argument", "check_metrics",
           "resolve_metrics", "search_metrics"]
