"""A study's data, checked before any trial: the root and categories exist, each split builds, and every image and
mask of the categories used decodes (a corrupt file stops the study here, named, not inside a trial)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from studies.runner.study import Study, StudyError

DATA_FOLDER = Path(__file__).resolve().parents[2] / "data"  # where the demo kinds are built by default


def default_demo_root(kind: str) -> Path:
    """Where a study without --data builds (or finds) the demo dataset kind `kind`: data/<kind> in the repository."""
    return DATA_FOLDER / kind


DEFAULT_DEMO_ROOT = default_demo_root("demo")


def resolve_data(args: argparse.Namespace, study: Study) -> tuple[str, list[str]]:
    """The dataset root and categories, checked: a clear error for a missing path or unknown category."""
    from dsr.data import build_demo_kind, is_demo_kind, list_categories

    from studies.runner.storage import is_remote

    if is_demo_kind(args.dataset) and not args.data:
        root = str(default_demo_root(args.dataset).resolve())
    elif not args.data:
        raise StudyError(f"--data is required for --dataset {args.dataset}")
    else:  # a URI (s3://...) stays one: every node syncs it into its own cache
        root = args.data if is_remote(args.data) else str(Path(args.data).resolve())
    local = local_data(root)
    if is_demo_kind(args.dataset):  # demo, demo_hard: built offline where missing
        try:
            build_demo_kind(args.dataset, local)
        except ValueError as error:
            raise StudyError(f"--data {root} for --dataset {args.dataset}: {error}") from error
    elif not Path(local).exists():
        raise StudyError(f"--data {args.data}: no such folder")
    try:
        available = list_categories(args.dataset, local)
    except (ValueError, FileNotFoundError) as error:
        raise StudyError(f"--data {root}: {error}") from error
    if args.categories == ["all"]:
        return root, available
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


def test_sets_have_masks(data_root: str, categories: list[str], args: argparse.Namespace) -> bool:
    """Whether every category's test set has masks (pixel metrics defined); builds the sets, decodes nothing."""
    from dsr.config import preset
    from dsr.data import build_dataset

    size = preset(args.preset).image_size
    try:
        return all(build_dataset(args.dataset, local_data(data_root), category, "test", size).has_masks
                   for category in categories)
    except (ValueError, FileNotFoundError) as error:
        raise StudyError(str(error).splitlines()[0]) from error


def _try_decode(dataset, index: int) -> str | None:
    try:
        dataset.check_decodes(index)
    except (ValueError, FileNotFoundError, OSError) as error:
        return str(error).splitlines()[0]
    return None


__all__ = ["DEFAULT_DEMO_ROOT", "check_data", "default_demo_root", "local_data", "resolve_data",
           "test_sets_have_masks"]
