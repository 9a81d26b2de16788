"""A searched study's Optuna study, kept with its experiment: Optuna's journal storage (one append-only file,
`<experiment>/optuna/journal.log`), continued by `--resume` and readable by Optuna's own tools:

    pip install optuna-dashboard
    optuna-dashboard results/sampling/optuna/journal.log        # JournalFileBackend files open directly

With cloud storage (`--storage s3://...`) the driver writes the journal into a local cache and uploads it beside
the results whenever a trial ends and when the run ends (`synced_files`); a resumed study downloads it first.
The Optuna study's name is the experiment's.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from studies.runner.synced_files import FileSync, local_copy

JOURNAL = "optuna/journal.log"


def local_journal(experiment: str, cache_dir: str | Path | None = None) -> Path:
    """The journal file the driver writes for this experiment."""
    return local_copy(experiment, JOURNAL, cache_dir)


def journal_sync(local: str | Path, experiment: str) -> FileSync:
    """The Tune callback that keeps the experiment's copy of the journal up to date (cloud storage)."""
    return FileSync(local, experiment, JOURNAL)


def optuna_storage(path: str | Path):
    """Optuna's journal storage on one file (created when missing)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(path)))


def optuna_search(args: argparse.Namespace, space: Any, points_to_evaluate: list[dict] | None = None):
    """Ray Tune's OptunaSearch for a study's define-by-run `space`: the study's searched metric(s) (several: Optuna's
    multi-objective TPE), stored in the experiment's journal when the tuner gave one (`args.optuna_journal`);
    `points_to_evaluate` (flattened names, e.g. "overrides/similarity_bound") are its first trials, enqueued in a
    new study only (a resumed one has them already)."""
    from ray.tune.search.optuna import OptunaSearch

    from studies.runner.objective import MODE, search_metrics

    metrics = search_metrics(args)
    journal = getattr(args, "optuna_journal", None)
    if journal and Path(journal).is_file() and Path(journal).stat().st_size:
        points_to_evaluate = None  # the stored study already holds them
    several = len(metrics) > 1  # multi-objective: lists of metrics and modes
    return OptunaSearch(points_to_evaluate=points_to_evaluate, space=space,
                        metric=metrics if several else metrics[0], mode=[MODE] * len(metrics) if several else MODE,
                        storage=optuna_storage(journal) if journal else None,
                        study_name=getattr(args, "optuna_study_name", None))


__all__ = ["JOURNAL", "journal_sync", "local_journal", "optuna_search", "optuna_storage"]
