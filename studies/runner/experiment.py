"""A study's experiment folder and the files the harness keeps in it: the options it ran with (resume checks) and
a searched study's test split. Local paths and URIs alike (pyarrow filesystems)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from studies.runner.data_checks import local_data
from studies.runner.study import Study, StudyError

OPTIONS_FILE = "study_options.json"
SPLIT_FILE = "test_split.json"
# Options that say where and how to run, not what: never compared on --resume.
PLACE_OPTIONS = {"cluster", "address", "storage", "name", "resume", "dry_run", "down", "attach",
                 "placement_timeout", "optuna_journal", "optuna_study_name"}
# What a resumed experiment can take on: the trainable is re-wrapped with new resources and intervals.
RESUMABLE_OPTIONS = {"cpus_per_trial", "gpus_per_trial", "stage1_cpus", "report_every", "checkpoint_every",
                     "checkpoint_minutes", "no_report", "tracker", "tracking_uri"}


def experiment_dir(storage: str, name: str) -> str:
    return f"{storage.rstrip('/')}/{name}"


def storage_path(experiment: str, file_name: str):
    """(pyarrow filesystem, path) of a file in the experiment's folder, a local path or a URI."""
    from pyarrow import fs as pafs

    location = experiment if "://" in experiment else str(Path(experiment).resolve())
    filesystem, folder = pafs.FileSystem.from_uri(location)
    return filesystem, f"{folder}/{file_name}"


def _read_json(experiment: str, file_name: str) -> Any | None:
    filesystem, path = storage_path(experiment, file_name)
    if filesystem.get_file_info(path).type.name != "File":
        return None
    with filesystem.open_input_stream(path) as stream:
        return json.loads(stream.read().decode())


def _write_json(experiment: str, file_name: str, document: Any) -> None:
    filesystem, path = storage_path(experiment, file_name)
    filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with filesystem.open_output_stream(path) as stream:
        stream.write(json.dumps(document, indent=1, default=str).encode())


def has_results(storage: str, name: str) -> bool:
    """Whether an experiment of this name was started: its options were saved, or Tune can restore it."""
    from ray import tune

    experiment = experiment_dir(storage if "://" in storage else str(Path(storage).resolve()), name)
    filesystem, path = storage_path(experiment, OPTIONS_FILE)
    return filesystem.get_file_info(path).type.name == "File" or tune.Tuner.can_restore(experiment)


def check_experiment(args: argparse.Namespace, name: str) -> str:
    """The experiment's folder, checked: a new study never overwrites one (it asks for --resume or --name), a
    resumed one runs what it ran before (`check_resume_options`)."""
    experiment = experiment_dir(args.storage, name)
    if not args.resume and has_results(args.storage, name):
        raise StudyError(f"{experiment} already holds an experiment: pass --resume to continue it, or "
                         f"--name NEW for a new one (nothing was changed)")
    check_resume_options(args, experiment)
    return experiment


def study_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options that decide what a study runs (saved with the experiment as study_options.json)."""
    return {k: v for k, v in sorted(vars(args).items()) if k not in PLACE_OPTIONS}


def check_resume_options(args: argparse.Namespace, experiment: str) -> None:
    """On --resume, compare with the saved options: those Tune can take on (resources, report/checkpoint
    intervals) are applied, any other difference is refused, listed in one line (never silently ignored)."""
    if not args.resume:
        return
    saved = _read_json(experiment, OPTIONS_FILE)
    if saved is None:
        return  # an experiment from before options were saved: nothing to compare with
    current = json.loads(json.dumps(study_options(args), default=str))
    changed = [k for k in sorted(set(saved) | set(current))
               if saved.get(k) != current.get(k) and k not in RESUMABLE_OPTIONS]
    if changed:
        listed = "; ".join(f"--{k.replace('_', '-')}: saved {saved.get(k)!r}, now {current.get(k)!r}"
                           for k in changed)
        raise StudyError(f"--resume cannot change what {experiment} runs ({listed}); resume with the saved "
                         f"options, or start a new experiment with --name")


def save_study_options(args: argparse.Namespace, experiment: str) -> None:
    """Write study_options.json into a new experiment (called once Ray is up, just before the tuner starts)."""
    if not args.resume:
        _write_json(experiment, OPTIONS_FILE, study_options(args))


def search_split(study: Study | None, args: argparse.Namespace, data_root: str, categories: list[str],
                 experiment: str) -> dict[str, dict[str, list[str]]]:
    """A searched study's search/report split of each category's test set: made once (seeded, stratified by
    defect type) and saved with the experiment, so a resumed or re-reported study uses the same one."""
    from dsr.config import preset
    from dsr.data import build_dataset
    from dsr.evaluation.records import test_image_name
    from dsr.evaluation.split import split_document, split_test_set

    saved = _read_json(experiment, SPLIT_FILE)
    if saved is not None:
        missing = [c for c in categories if c not in saved["categories"]]
        if missing:
            raise StudyError(f"{experiment}/{SPLIT_FILE} has no split for {', '.join(missing)}")
        return {c: saved["categories"][c] for c in categories}
    size = preset(args.preset).image_size
    splits = {}
    for category in categories:
        samples = build_dataset(args.dataset, local_data(data_root), category, "test", size).samples
        splits[category] = split_test_set([test_image_name(s.image_path) for s in samples],
                                          [s.defect_type for s in samples], args.search_fraction, seed=0)
    _write_json(experiment, SPLIT_FILE, split_document(splits, args.search_fraction, 0))
    return splits


__all__ = ["OPTIONS_FILE", "PLACE_OPTIONS", "RESUMABLE_OPTIONS", "SPLIT_FILE", "check_experiment",
           "check_resume_options", "experiment_dir", "has_results", "save_study_options", "search_split",
           "study_options"]
