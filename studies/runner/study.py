"""What a study is: its declaration (`Study`), the one error that stops it before any trial (`StudyError`), and
the metric searched studies optimise. Every other runner module may import this one; it imports none of them."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any, Callable

METRIC, MODE = "image_auroc", "max"


@dataclass
class Study:
    """A study: a name and what it varies. `space(args)` returns the trial-config entries the study varies
    (Tune grid_search / distributions allowed, e.g. {"variant": tune.grid_search([...])} or
    {"overrides": {"similarity_bound": tune.grid_search([...])}}); `searcher(args)`/`scheduler(args)` optionally
    return a Tune search algorithm / scheduler (e.g. OptunaSearch + ASHA)."""

    name: str
    description: str
    space: Callable[[argparse.Namespace], dict[str, Any]]
    searcher: Callable[[argparse.Namespace], Any] | None = None
    scheduler: Callable[[argparse.Namespace], Any] | None = None
    default_categories: int | None = None  # with no --categories: the first N of the dataset (None: all)
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    notes: list[str] = field(default_factory=list)
    # Split each test set into a search and a report part (searched studies always; grids where the study says so)
    split_test: bool = False

    def is_searched(self, args: argparse.Namespace) -> bool:
        """Whether this command line runs a search (a searcher), not a grid."""
        return self.searcher is not None and self.searcher(args) is not None


class StudyError(ValueError):
    """Bad input found before any trial starts; printed as one line."""


__all__ = ["METRIC", "MODE", "Study", "StudyError"]
