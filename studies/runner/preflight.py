"""Checks of a `--cluster` command line's remote inputs, on this machine, before `ray up` starts (or bills) anything.

A `--data s3://...` dataset is checked against `--dataset` from a listing of its prefix, never a download: the
listing becomes a skeleton tree of empty files (small JSON markers, the demo's and a flat folder's split, are read)
and the dataset code of `dsr.data` checks that tree's layout exactly as it would check the real one on the nodes.
`--stage1-data s3://...` must hold images and `--stage1-checkpoint s3://...` must be a file; both are synced to
the nodes that need them (`studies.runner.storage.local_dataset` / `local_file`).
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs

from studies.runner.storage import is_remote, storage_filesystem

_SMALL_JSON = 1 << 20  # JSON files up to this size are read into the skeleton (markers, saved splits)


@contextlib.contextmanager
def skeleton(uri: str, flag: str) -> Iterator[Path]:
    """A temporary local tree mirroring the files under `uri`: empty files, except small .json files copied.
    ValueError (one line, naming `flag` and `uri`) when the location cannot be listed or holds no file."""
    filesystem, root = storage_filesystem(uri)
    root = root.rstrip("/")
    try:
        entries = filesystem.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    except OSError as error:  # no credentials, access denied, no such bucket
        raise ValueError(f"{flag} {uri}: cannot list it from this machine ({_one_line(error)}); check the "
                         f"bucket name and your AWS credentials") from None
    files = [entry for entry in entries if entry.type == pafs.FileType.File]
    if not files:
        raise ValueError(f"{flag} {uri}: nothing there (no such bucket, prefix or object)")
    with tempfile.TemporaryDirectory(prefix="dsr-listing-") as folder:
        base = Path(folder) / Path(root).name
        base.mkdir()
        for entry in files:
            relative = entry.path[len(root):].lstrip("/")
            target = base / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if relative.endswith(".json") and (entry.size or 0) <= _SMALL_JSON:
                with filesystem.open_input_stream(entry.path) as stream:
                    target.write_bytes(stream.read())
            else:
                target.touch()
        yield base


def guess_kind(root: Path) -> str | None:
    """The dataset kind a tree's layout looks like (None: none of them)."""
    from dsr.data.demo import demo_kind
    from dsr.data.layout import looks_like_category, subfolders

    kind = demo_kind(root)  # demo or demo_hard, from the build's marker (read by the skeleton)
    if kind is not None:
        return kind
    if any(looks_like_category(p) for p in subfolders(root)):
        return "mvtec"
    if looks_like_category(root) or (root / "good").is_dir():
        return "folder"
    if (root / "train").is_dir() and any(p.stem.endswith("_GT") for p in (root / "train").iterdir()):
        return "ksdd2"
    return None


def check_layout(root: Path, kind: str, categories: list[str] | None, image_size: int) -> list[str]:
    """The categories of the dataset at `root` read as `kind`, every split of the requested ones built (names and
    layout only, nothing decoded). ValueError / FileNotFoundError as `dsr.data` raises them."""
    from dsr.data import build_dataset, list_categories
    from dsr.data.ksdd2 import _pairs

    available = list_categories(kind, root)
    chosen = list(available if not categories or categories == ["all"] else categories)
    unknown = [c for c in chosen if c not in available]
    if unknown:
        raise ValueError(f"--categories {', '.join(unknown)} not there (present: {', '.join(available)})")
    for category in chosen:
        for split in ("train", "test"):
            if kind == "ksdd2":  # its masks are read when the dataset is built: check the pairing only
                if not (root / split).is_dir():
                    raise FileNotFoundError(f"expected KSDD2 folder {root / split}")
                _pairs(root / split)
            else:
                build_dataset(kind, root, category, split, image_size)
    return chosen


def check_remote_dataset(uri: str, kind: str, categories: list[str] | None, image_size: int) -> list[str]:
    """`--data URI` read as `--dataset kind`, from a listing: the categories used, or ValueError in one line that
    names --data, --dataset and, when the layout is another kind's, that kind."""
    with skeleton(uri, "--data") as root:
        try:
            return check_layout(root, kind, categories, image_size)
        except (ValueError, FileNotFoundError) as error:
            problem = _one_line(str(error).replace(str(root), uri.rstrip("/")))
            guessed = guess_kind(root)
            hint = (f"; its layout is that of --dataset {guessed}: pass --dataset {guessed}"
                    if guessed and guessed != kind else "")
            raise ValueError(f"--data {uri} read as --dataset {kind}: {problem}{hint}") from None


def check_remote_images(uri: str, flag: str) -> int:
    """The number of image files under `uri` (ValueError in one line when there is none)."""
    from dsr.data.io import is_image_file

    with skeleton(uri, flag) as root:
        count = sum(1 for path in root.rglob("*") if is_image_file(path))
    if not count:
        raise ValueError(f"{flag} {uri}: no image files there")
    return count


def check_remote_file(uri: str, flag: str) -> None:
    """`uri` is one file (ValueError in one line otherwise)."""
    filesystem, path = storage_filesystem(uri)
    try:
        info = filesystem.get_file_info(path)
    except OSError as error:
        raise ValueError(f"{flag} {uri}: cannot read it from this machine ({_one_line(error)})") from None
    if info.type != pafs.FileType.File:
        raise ValueError(f"{flag} {uri}: no such file" + (" (a folder: name the file in it)"
                                                         if info.type == pafs.FileType.Directory else ""))


def check_remote_inputs(args: argparse.Namespace) -> None:
    """Every remote input of a study's command line, as far as it can be checked from here (see the module)."""
    from dsr.config import preset

    if args.data and is_remote(args.data):
        check_remote_dataset(args.data, args.dataset, args.categories, preset(args.preset).image_size)
    if getattr(args, "stage1_data", None) and is_remote(args.stage1_data):
        check_remote_images(args.stage1_data, "--stage1-data")
    if getattr(args, "stage1_checkpoint", None) and is_remote(args.stage1_checkpoint):
        check_remote_file(args.stage1_checkpoint, "--stage1-checkpoint")


def _one_line(text: object, limit: int = 300) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


__all__ = ["skeleton", "guess_kind", "check_layout", "check_remote_dataset", "check_remote_images",
           "check_remote_file", "check_remote_inputs"]
