"""Ray Tune wiring of the harness: start or join Ray, build (or restore) the Tuner, run it, count failures."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import ray
from ray import tune

from studies.runner import stage1
from studies.runner.callbacks import run_callbacks
from studies.runner.objective import search_metrics
from studies.runner.placement import alive_node_resources
from studies.runner.optuna_store import journal_sync, local_journal
from studies.runner.repeats import RepeatedSearch, repeat_runs
from studies.runner.experiment import experiment_dir, save_study_options
from studies.runner.provenance import record_run
from studies.runner.space import grid_points
from studies.runner.study import METRIC, MODE, Study, StudyError
from studies.runner.trainable import dsr_trial
from studies.runner.tracking import tracker_callbacks
from studies.runner.trial import RunSettings


SYNC_PERIOD_S = 10


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


def run_settings(study: Study, args: argparse.Namespace, storage: str, name: str, categories: list[str],
                 test_split: dict[str, dict[str, list[str]]] | None = None) -> RunSettings:
    """The constants every trial of this command line receives (resources and intervals are taken on by a
    resumed experiment: they are read from the current command line, not the saved one)."""
    return RunSettings(storage=storage, experiment=name, categories=tuple(categories),
                       stage1_data=args.stage1_data, report_every=args.report_every,
                       checkpoint_every=args.checkpoint_every, checkpoint_minutes=args.checkpoint_minutes,
                       test_split=test_split, interim_eval=study.searcher is not None or study.scheduler is not None,
                       stage1_checkpoint=_stage1_checkpoint(args.stage1_checkpoint))


def run_tuner(study: Study, args: argparse.Namespace, space: dict[str, Any], categories: list[str],
              name: str, test_split: dict[str, dict[str, list[str]]] | None = None) -> int:
    """Run (or resume) the experiment: the stage-1 phase, then the main trials; returns the number of main
    trials that ended in error.

    test_split: category -> {"search": names, "report": names} for searched studies (see dsr.evaluation.split).
    """
    from studies.runner.storage import local_file, require_shared_storage

    storage = args.storage if "://" in args.storage else str(Path(args.storage).resolve())
    settings = run_settings(study, args, storage, name, categories, test_split)
    experiment = experiment_dir(storage, name)
    points = grid_points(space)
    if study.is_searched(args):  # the searcher's runs: each (category, seed) needs its stage-1 model
        points = [{**point, "category": category, "seed": seed} for point in points
                  for category, seed in repeat_runs(categories, getattr(args, "repeats", 1))]
    jobs = stage1.plan(points, settings)
    checkpoint = settings.stage1_checkpoint
    if checkpoint:
        try:
            stage1.install_checkpoint(local_file(checkpoint), jobs, settings)  # s3://...: copied here once
        except (ValueError, FileNotFoundError) as error:
            raise StudyError(str(error).splitlines()[0]) from None
    start_ray(args)
    try:
        try:
            require_shared_storage(storage)  # on a multi-node cluster: a path every node sees, or a URI
        except ValueError as error:
            raise StudyError(str(error)) from None
        save_study_options(args, experiment)
        record_run(experiment, args, sys.argv[1:], study.name, ray.cluster_resources())
        run_stage1_phase(jobs, args, settings, experiment)
        trainable = make_trainable(args, settings)
        callbacks = tracker_callbacks(args, experiment, name)
        if study.is_searched(args):  # the Optuna study lives in the experiment (a journal file), synced with it
            journal = local_journal(experiment)
            args.optuna_journal, args.optuna_study_name = str(journal), name
            callbacks.append(journal_sync(journal, experiment))
        if args.resume and tune.Tuner.can_restore(experiment):
            _recover_trial_ends(experiment)
            tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_unfinished=True,
                                       resume_errored=True, param_space=space)
        else:
            tuner = tune.Tuner(trainable, param_space=space, tune_config=_tune_config(study, args, categories),
                               run_config=_run_config(args, storage, name, callbacks))
        results = tuner.fit()
        for error in results.errors:
            print(f"trial error: {str(error).strip().splitlines()[-1]}")
        return len(results.errors)
    finally:
        ray.shutdown()


def _recover_trial_ends(experiment: str) -> None:
    """Before a restore: trials whose end was lost with the cluster get it back from their final checkpoint."""
    from studies.runner.recovery import recover_trial_ends

    repaired = recover_trial_ends(experiment)
    if repaired:
        print(f"resume: {len(repaired)} trial(s) had finished, but their end was lost with the cluster before it "
              f"was uploaded; recorded from their final checkpoints: {', '.join(repaired)}", flush=True)


def _stage1_checkpoint(given: str | None) -> str | None:
    """--stage1-checkpoint as every node names it: a URI stays one, a path is made absolute."""
    from studies.runner.storage import is_remote

    if not given:
        return None
    return given if is_remote(given) else str(Path(given).resolve())


def run_stage1_phase(jobs: dict[str, dict[str, Any]], args: argparse.Namespace, settings: RunSettings,
                     experiment: str) -> dict[str, str]:
    """Train every stage-1 model of the study not yet in storage, one Tune trial each, all before the main
    trials; returns {key: error} for those that failed (their error is also stored for the trials needing them).
    A resumed study restores the phase's own experiment: a half-trained stage 1 goes on from its checkpoint."""
    todo = [key for key in sorted(jobs) if not stage1.has_latent(settings, key)]
    if not settings.stage1_checkpoint:
        reused = stage1.reuse_stored(settings, jobs, todo)
        for key in reused:
            print(f"stage 1 {key}: reused from {settings.storage}/{stage1.STORE} (trained by an earlier study)",
                  flush=True)
        todo = [key for key in todo if key not in reused]
    if not todo:
        return {}
    print(f"stage 1: training {len(todo)} stage-1 model(s) ({', '.join(todo)}) before the study's trials",
          flush=True)
    node_cpus = [node.get("CPU", 0.0) for node in alive_node_resources()]
    cpus = stage1.phase_cpus(len(todo), args.cpus_per_trial, args.gpus_per_trial,
                             getattr(args, "stage1_cpus", 0.0), node_cpus)
    if cpus != args.cpus_per_trial:
        print(f"stage 1: {cpus:g} CPUs for each stage-1 model (--stage1-cpus)", flush=True)
    resources = {"cpu": cpus, "gpu": args.gpus_per_trial}
    trainable = tune.with_resources(tune.with_parameters(stage1.stage1_trial, settings=settings, jobs=jobs),
                                    resources)
    space = {"stage1_key": tune.grid_search(sorted(jobs))}  # every key: the same space when resumed
    path = f"{experiment}/{stage1.PHASE}"
    if args.resume and tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True,
                                   param_space=space)
    else:
        tuner = tune.Tuner(trainable, param_space=space,
                           tune_config=tune.TuneConfig(max_concurrent_trials=args.max_concurrent or None),
                           run_config=_run_config(args, experiment, stage1.PHASE))
    failed, trained = {}, set()
    for result in tuner.fit():
        key = (result.config or {}).get("stage1_key")
        if result.error is not None and key:
            failed[key] = str(result.error).strip().splitlines()[-1]
            stage1.record_failure(settings, key, failed[key])
            print(f"stage 1 {key} failed: {failed[key]}", flush=True)
        elif key and stage1.has_latent(settings, key):
            stage1.publish(settings, key)  # one stage 1 for every later study under this storage root
            trained.add(key)
    unfinished = [key for key in todo if key not in failed and key not in trained]
    if unfinished:  # the phase was stopped (Ctrl-C): main trials would only fail for want of their stage 1
        raise StudyError(f"the stage-1 phase stopped before {', '.join(unfinished)} finished (interrupted?); "
                         f"nothing trained is lost: continue with --resume")
    return failed


def _tune_config(study: Study, args: argparse.Namespace, categories: list[str]) -> tune.TuneConfig:
    """The searcher (each suggestion repeated over the study's runs when there are several), the scheduler on
    the first searched metric, and the number of trials (samples x runs)."""
    searcher = study.searcher(args) if study.searcher else None
    scheduler = study.scheduler(args) if study.scheduler else None
    searched = searcher is not None or scheduler is not None
    runs = repeat_runs(categories, getattr(args, "repeats", 1)) if searcher is not None else []
    if len(runs) > 1:
        searcher = RepeatedSearch(searcher, runs)
    metric = search_metrics(args)[0] if hasattr(args, "metric") else METRIC
    # A grid has no metric to optimise: intermediate reports (losses) then need not carry one.
    return tune.TuneConfig(
        metric=metric if searched else None, mode=MODE if searched else None, search_alg=searcher,
        scheduler=scheduler,
        num_samples=getattr(args, "num_samples", 1) * max(1, len(runs)) if searcher else 1,
        max_concurrent_trials=args.max_concurrent or None,
    )


def _run_config(args: argparse.Namespace, storage: str, name: str,
                extra_callbacks: list | None = None) -> tune.RunConfig:
    return tune.RunConfig(
        name=name,
        storage_path=storage,
        failure_config=tune.FailureConfig(max_failures=args.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        # The driver uploads the experiment's state and results to cloud storage at most this often: a study
        # resumed after losing its whole cluster knows which trials had finished up to this long before.
        sync_config=tune.SyncConfig(sync_period=SYNC_PERIOD_S),
        callbacks=[*run_callbacks(args), *(extra_callbacks or [])],
        verbose=1,
    )
