"""The shared study harness: one command line, checks before any trial starts, Ray Tune, the report at the end.

A study file declares a `Study` (its name, its search space, optionally a searcher and scheduler) and calls
`main(STUDY)`. Everything else — where Ray runs, data, seeds, storage, resume, fault tolerance, the report — is
here, the same for every study.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

PROJECT_DIR = Path(__file__).resolve().parents[2]
DEFAULT_DEMO_ROOT = PROJECT_DIR / "data" / "demo"
DEFAULT_STORAGE = PROJECT_DIR / "results"
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


class StudyError(ValueError):
    """Bad input found before any trial starts; printed as one line."""


def build_parser(study: Study) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"studies/{study.name}.py", description=study.description)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--cluster", metavar="FILE", help="Ray cluster launcher file: bring it up (or reuse it), "
                       "run the study there through Ray Jobs, bring the results back")
    where.add_argument("--address", metavar="ADDR", help="an existing Ray cluster (host:port or ray://...)")
    parser.add_argument("--dry-run", action="store_true", help="with --cluster: check everything, print the "
                        "commands and every file of the package that would be uploaded; start nothing")
    parser.add_argument("--down", action="store_true", help="with --cluster: tear the cluster down at the end")
    parser.add_argument("--preset", default="small", help="DSR preset: small (default), paper or tiny")
    parser.add_argument("--dataset", default="demo", choices=["mvtec", "ksdd2", "folder", "demo"])
    parser.add_argument("--data", metavar="PATH", help="dataset root (default for demo: data/demo, built on use)")
    parser.add_argument("--categories", nargs="+", metavar="C", help="categories (default: the study's choice)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per configuration (0..N-1)")
    parser.add_argument("--storage", default=str(DEFAULT_STORAGE), help="results: a path or a URI (s3://...)")
    parser.add_argument("--name", default=None, help="experiment name (a folder under --storage)")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0)
    parser.add_argument("--gpus-per-trial", type=float, default=0.0, help="fractions allowed, e.g. 0.5")
    parser.add_argument("--max-concurrent", type=int, default=0, help="trials at once (0: as resources allow)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted experiment of this name")
    parser.add_argument("--max-failures", type=int, default=3, help="retries of a failed trial (from checkpoint)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="a DSRConfig field for every trial, e.g. --set stage2_iterations=200")
    parser.add_argument("--stage1-data", metavar="DIR", help="images for stage 1 (default: the categories' "
                        "train images)")
    parser.add_argument("--stage1-checkpoint", metavar="FILE", help="a stage-1 model instead of training stage 1: "
                        "the reference's vq_model_pretrained_128_4096.pckl (ImageNet; trained on BGR images: add "
                        "--set channel_order=bgr) or a latent.pt / model checkpoint of this project")
    parser.add_argument("--report-every", type=int, default=0, help="iterations between progress reports")
    parser.add_argument("--checkpoint-every", type=int, default=0, help="iterations between checkpoints")
    parser.add_argument("--no-report", action="store_true", help="skip building the report at the end")
    parser.add_argument("--search-fraction", type=float, default=0.5, help="searched studies: the part of each "
                        "test set the searcher sees; the rest is only reported (default 0.5)")
    if study.add_arguments is not None:
        study.add_arguments(parser)
    return parser


def parse_override(text: str) -> tuple[str, Any]:
    """FIELD=VALUE with VALUE parsed as JSON where it can be (numbers, true/false, null, dicts)."""
    import json

    from dsr.config import DSRConfig

    if "=" not in text:
        raise StudyError(f"--set {text!r}: expected FIELD=VALUE")
    name, raw = text.split("=", 1)
    fields = DSRConfig.__dataclass_fields__
    if name not in fields:
        raise StudyError(f"--set {name}: not a DSRConfig field")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return name, value


def _grid_points(space: Any) -> list[Any]:
    """Every concrete value a (possibly nested) space of grid_search / constants can take, for validation."""
    if isinstance(space, dict):
        if set(space) == {"grid_search"}:
            return [p for value in space["grid_search"] for p in _grid_points(value)]
        keys = list(space)
        options = [_grid_points(space[k]) for k in keys]
        return [dict(zip(keys, combo)) for combo in itertools.product(*options)]
    return [space]


def resolve_data(args: argparse.Namespace, study: Study) -> tuple[str, list[str]]:
    """The dataset root and categories, checked: a clear error for a missing path or unknown category."""
    from dsr.data import build_demo, list_categories

    from studies.runner.storage import is_remote

    if args.dataset == "demo" and not args.data:
        root = str(DEFAULT_DEMO_ROOT.resolve())
    elif not args.data:
        raise StudyError(f"--data is required for --dataset {args.dataset}")
    else:  # a URI (s3://...) stays one: every node syncs it into its own cache
        root = args.data if is_remote(args.data) else str(Path(args.data).resolve())
    local = local_data(root)
    if args.dataset == "demo":
        build_demo(local)
    elif not Path(local).exists():
        raise StudyError(f"--data {args.data}: no such folder")
    try:
        available = list_categories(args.dataset, local)
    except (ValueError, FileNotFoundError) as error:
        raise StudyError(f"--data {root}: {error}") from error
    if args.categories:
        unknown = [c for c in args.categories if c not in available]
        if unknown:
            raise StudyError(f"--categories: {', '.join(unknown)} not in {root} (present: {', '.join(available)})")
        return root, list(args.categories)
    return root, available[: study.default_categories] if study.default_categories else available


def local_data(root: str) -> str:
    """The dataset on this machine: a URI is synced once into the local cache (a missing one: StudyError)."""
    from studies.runner.storage import local_dataset

    try:
        return local_dataset(root)
    except (ValueError, FileNotFoundError) as error:
        raise StudyError(str(error).splitlines()[0]) from None


def build_param_space(study: Study, args: argparse.Namespace, data_root: str, categories: list[str]) -> dict:
    from ray import tune

    overrides = dict(parse_override(text) for text in args.overrides)
    space: dict[str, Any] = {
        "study": study.name,
        "preset": args.preset,
        "dataset": args.dataset,
        "data_root": data_root,
        "variant": "DSR",
        "category": tune.grid_search(categories) if len(categories) > 1 else categories[0],
        "seed": tune.grid_search(list(range(args.seeds))) if args.seeds > 1 else 0,
        "overrides": overrides,
    }
    varied = study.space(args)
    if "overrides" in varied:
        varied = {**varied, "overrides": {**overrides, **varied["overrides"]}}
    space.update(varied)
    return space


def validate_space(space: dict[str, Any], study: Study, args: argparse.Namespace) -> int:
    """Resolve every grid point's DSRConfig (unknown variant/strategy, bad value: one line); the number of points."""
    from studies.runner.trial import resolve_config

    points = _grid_points(space)
    if study.searcher is not None and study.searcher(args) is not None:
        if len(points) > 1:
            raise StudyError("a searched study runs one category and one seed per search: give one --categories "
                             "value and --seeds 1 (or use a grid)")
        resolve_config(points[0])  # the fixed part of the space
        return 0
    for point in points:
        try:
            resolve_config(point)
        except ValueError as error:
            raise StudyError(str(error).splitlines()[0]) from error
    return len(points)


def check_data(data_root: str, categories: list[str], args: argparse.Namespace) -> None:
    """Build each category's train and test split (a wrong layout stops here) and decode every image and mask once
    (a corrupt file stops here, named, not inside a trial after stage 1); a progress bar on stderr."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    from dsr.config import preset
    from dsr.data import build_dataset

    config = preset(args.preset)
    datasets = []
    for category in categories:
        for split in ("train", "test"):
            try:
                datasets.append(build_dataset(args.dataset, local_data(data_root), category, split,
                                              config.image_size))
            except (ValueError, FileNotFoundError) as error:
                raise StudyError(str(error).splitlines()[0]) from error
    work = [(dataset, index) for dataset in datasets for index in range(len(dataset))]
    with ThreadPoolExecutor(max_workers=4) as pool, tqdm(total=len(work), desc="checking images", unit="img",
                                                          disable=not sys.stderr.isatty()) as bar:
        for outcome in pool.map(lambda item: _try_decode(*item), work):
            bar.update(1)
            if outcome is not None:
                raise StudyError(outcome)


def _try_decode(dataset, index: int) -> str | None:
    try:
        dataset.check_decodes(index)
    except (ValueError, FileNotFoundError, OSError) as error:
        return str(error).splitlines()[0]
    return None


def run_study(study: Study, argv: list[str] | None = None) -> int:
    """Parse, check, run on Ray Tune, report. Returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(study).parse_args(argv)
    name = args.name or study.name
    try:
        from dsr.config import preset

        preset(args.preset)
        if not 0.0 < args.search_fraction < 1.0:
            raise StudyError(f"--search-fraction must lie in (0, 1), got {args.search_fraction}")
        if args.cluster:
            return _run_on_cluster(study, args, argv)
        data_root, categories = resolve_data(args, study)
        space = build_param_space(study, args, data_root, categories)
        count = validate_space(space, study, args)
        check_data(data_root, categories, args)
        experiment_dir = _experiment_dir(args.storage, name)
        if not args.resume and _has_results(args.storage, name):
            raise StudyError(f"{experiment_dir} already holds an experiment: pass --resume to continue it, or "
                             f"--name NEW for a new one (nothing was changed)")
        check_resume_options(args, experiment_dir)
    except (StudyError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{study.name}: {count or 'searched'} trial configurations, categories {', '.join(categories)}, "
          f"preset {args.preset}, results in {experiment_dir}", flush=True)
    from studies.runner.tuner import run_tuner

    try:
        searched = count == 0
        test_split = (search_split(study, args, data_root, categories, experiment_dir)
                      if searched or study.split_test else None)
        errors = run_tuner(study, args, space, categories, name, test_split)
    except StudyError as error:  # raised only before the tuner starts (e.g. --address unreachable)
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not args.no_report:
        _build_report(experiment_dir)
    if errors:
        print(f"{study.name}: {errors} trial(s) failed; see the errors above and {experiment_dir}", file=sys.stderr)
        return 1
    return 0


OPTIONS_FILE = "study_options.json"
# Options that say where and how to run, not what: never compared on --resume.
PLACE_OPTIONS = {"cluster", "address", "storage", "name", "resume", "dry_run", "down"}
# What a resumed experiment can take on: the trainable is re-wrapped with new resources and intervals.
RESUMABLE_OPTIONS = {"cpus_per_trial", "gpus_per_trial", "report_every", "checkpoint_every", "no_report"}


def study_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options that decide what a study runs (saved with the experiment as study_options.json)."""
    return {k: v for k, v in sorted(vars(args).items()) if k not in PLACE_OPTIONS}


def check_resume_options(args: argparse.Namespace, experiment_dir: str) -> None:
    """On --resume, compare with the saved options: those Tune can take on (resources, report/checkpoint
    intervals) are applied, any other difference is refused, listed in one line (never silently ignored)."""
    import json

    if not args.resume:
        return
    filesystem, path = _storage_path(experiment_dir, OPTIONS_FILE)
    if filesystem.get_file_info(path).type.name != "File":
        return  # an experiment from before options were saved: nothing to compare with
    with filesystem.open_input_stream(path) as stream:
        saved = json.loads(stream.read().decode())
    current = json.loads(json.dumps(study_options(args), default=str))
    changed = [k for k in sorted(set(saved) | set(current))
               if saved.get(k) != current.get(k) and k not in RESUMABLE_OPTIONS]
    if changed:
        listed = "; ".join(f"--{k.replace('_', '-')}: saved {saved.get(k)!r}, now {current.get(k)!r}"
                           for k in changed)
        raise StudyError(f"--resume cannot change what {experiment_dir} runs ({listed}); resume with the saved "
                         f"options, or start a new experiment with --name")


def save_study_options(args: argparse.Namespace, experiment_dir: str) -> None:
    """Write study_options.json into a new experiment (called once Ray is up, just before the tuner starts)."""
    import json

    if args.resume:
        return
    filesystem, path = _storage_path(experiment_dir, OPTIONS_FILE)
    filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with filesystem.open_output_stream(path) as stream:
        stream.write(json.dumps(study_options(args), indent=1, default=str).encode())


def _storage_path(experiment_dir: str, file_name: str):
    """(pyarrow filesystem, path) of a file in the experiment's folder, a local path or a URI."""
    from pyarrow import fs as pafs

    location = experiment_dir if "://" in experiment_dir else str(Path(experiment_dir).resolve())
    filesystem, folder = pafs.FileSystem.from_uri(location)
    return filesystem, f"{folder}/{file_name}"


SPLIT_FILE = "test_split.json"


def search_split(study: Study, args: argparse.Namespace, data_root: str, categories: list[str],
                 experiment_dir: str) -> dict[str, dict[str, list[str]]]:
    """A searched study's search/report split of each category's test set: made once (seeded, stratified by
    defect type) and saved with the experiment, so a resumed or re-reported study uses the same one."""
    import json

    from dsr.config import preset
    from dsr.data import build_dataset
    from dsr.evaluation.records import test_image_name
    from dsr.evaluation.split import split_document, split_test_set

    filesystem, path = _storage_path(experiment_dir, SPLIT_FILE)
    folder = path.rsplit("/", 1)[0]
    if filesystem.get_file_info(path).type.name == "File":
        with filesystem.open_input_stream(path) as stream:
            saved = json.loads(stream.read().decode())
        missing = [c for c in categories if c not in saved["categories"]]
        if missing:
            raise StudyError(f"{experiment_dir}/{SPLIT_FILE} has no split for {', '.join(missing)}")
        return {c: saved["categories"][c] for c in categories}
    size = preset(args.preset).image_size
    splits = {}
    for category in categories:
        samples = build_dataset(args.dataset, local_data(data_root), category, "test", size).samples
        splits[category] = split_test_set([test_image_name(s.image_path) for s in samples],
                                          [s.defect_type for s in samples], args.search_fraction, seed=0)
    filesystem.create_dir(folder, recursive=True)
    with filesystem.open_output_stream(path) as stream:
        stream.write(json.dumps(split_document(splits, args.search_fraction, 0), indent=1).encode())
    return splits


def _experiment_dir(storage: str, name: str) -> str:
    return f"{storage.rstrip('/')}/{name}"


def _has_results(storage: str, name: str) -> bool:
    """Whether an experiment of this name was started: its options were saved, or Tune can restore it."""
    from ray import tune

    experiment_dir = _experiment_dir(storage if "://" in storage else str(Path(storage).resolve()), name)
    filesystem, path = _storage_path(experiment_dir, OPTIONS_FILE)
    return filesystem.get_file_info(path).type.name == "File" or tune.Tuner.can_restore(experiment_dir)


def _build_report(experiment_dir: str) -> None:
    try:
        from reports import build_report

        out = build_report(experiment_dir)
        print(f"report: {out}", flush=True)
    except Exception as error:  # a report problem must not hide the study's own outcome
        print(f"report not built: {error}", file=sys.stderr)


def _run_on_cluster(study: Study, args: argparse.Namespace, argv: list[str]) -> int:
    from studies.runner.launch import run_cluster_command

    return run_cluster_command(study.name, args, argv)  # checks raise ValueError (one line) before anything starts


def main(study: Study) -> None:
    """Entry point of a study file."""
    sys.exit(run_study(study))


__all__ = ["Study", "StudyError", "build_parser", "main", "run_study", "METRIC", "MODE"]
