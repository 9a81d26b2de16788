"""Ray Tune wiring of the harness: start or join Ray, build (or restore) the Tuner, run it, count failures."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import ray
from ray import tune

from studies.runner.harness import METRIC, MODE, Study, StudyError
from studies.runner.trainable import Stage1Coordinator, dsr_trial
from studies.runner.trial import RunSettings


def start_ray(args: argparse.Namespace) -> None:
    from studies.runner.runtime import connect, init_local_ray

    if args.address:
        try:
            connect(args.address)
        except (ConnectionError, ValueError) as error:  # a wrong --address: one line, before any trial
            raise StudyError(str(error)) from None
    else:
        init_local_ray()


def make_trainable(args: argparse.Namespace, settings: RunSettings):
    resources = {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial}
    return tune.with_resources(tune.with_parameters(dsr_trial, settings=settings), resources)


def run_tuner(study: Study, args: argparse.Namespace, space: dict[str, Any], categories: list[str],
              name: str, test_split: dict[str, dict[str, list[str]]] | None = None) -> int:
    """Run (or resume) the experiment; returns the number of trials that ended in error.

    test_split: category -> {"search": names, "report": names} for searched studies (see dsr.evaluation.split).
    """
    storage = args.storage if "://" in args.storage else str(Path(args.storage).resolve())
    settings = RunSettings(storage=storage, experiment=name, categories=tuple(categories),
                           stage1_data=args.stage1_data, report_every=args.report_every,
                           checkpoint_every=args.checkpoint_every, test_split=test_split,
                           interim_eval=study.searcher is not None or study.scheduler is not None)
    start_ray(args)
    from studies.runner.harness import save_study_options

    save_study_options(args, f"{storage.rstrip('/')}/{name}")
    coordinator = Stage1Coordinator.options(name=settings.coordinator, get_if_exists=True).remote()
    try:
        trainable = make_trainable(args, settings)
        path = f"{storage.rstrip('/')}/{name}"
        if args.resume and tune.Tuner.can_restore(path):
            tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True,
                                       param_space=space)
        else:
            tuner = tune.Tuner(trainable, param_space=space, tune_config=_tune_config(study, args),
                               run_config=_run_config(args, storage, name))
        results = tuner.fit()
        for error in results.errors:
            print(f"trial error: {str(error).strip().splitlines()[-1]}")
        return len(results.errors)
    finally:
        ray.kill(coordinator)
        ray.shutdown()


def _tune_config(study: Study, args: argparse.Namespace) -> tune.TuneConfig:
    searcher = study.searcher(args) if study.searcher else None
    scheduler = study.scheduler(args) if study.scheduler else None
    searched = searcher is not None or scheduler is not None
    # A grid has no metric to optimise: intermediate reports (losses) then need not carry one.
    return tune.TuneConfig(
        metric=METRIC if searched else None, mode=MODE if searched else None, search_alg=searcher,
        scheduler=scheduler,
        num_samples=getattr(args, "num_samples", 1) if searcher else 1,
        max_concurrent_trials=args.max_concurrent or None,
    )


def _run_config(args: argparse.Namespace, storage: str, name: str) -> tune.RunConfig:
    return tune.RunConfig(
        name=name,
        storage_path=storage,
        failure_config=tune.FailureConfig(max_failures=args.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        verbose=1,
    )
