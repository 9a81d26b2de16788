"""One entry point for every dataset kind: `build_dataset` and `list_categories`.

Kinds: "mvtec" (MVTec AD, root holds category folders), "ksdd2" (KSDD2 root), "folder" (one user folder in the
MVTec layout without the category level) and the MVTec-layout demos built by `dsr.data.demo.build_demo`: "demo"
(easy defects) and "demo_hard" (subtle defects, the feature-sampling research benchmark); `dsr.data.kinds`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dsr.data.dataset import AnomalyDataset
from dsr.data.kinds import DEMO_KINDS, is_demo_kind
from dsr.data.ksdd2 import ksdd2
from dsr.data.layout import check_root, looks_like_category, subfolders
from dsr.data.mvtec import folder, mvtec

DATASET_KINDS = ("mvtec", "ksdd2", "folder", *DEMO_KINDS)
_EXTRA_OPTIONS = {"mvtec": {"antialias"}, "folder": {"antialias", "train_fraction"},
                  "ksdd2": {"antialias", "supervised_count"}, **{kind: {"antialias"} for kind in DEMO_KINDS}}



def _check_kind(kind: str) -> str:
    if kind not in DATASET_KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; known kinds: {', '.join(DATASET_KINDS)}")
    return kind


def _check_demo_built(root: Path, kind: str) -> None:
    from dsr.data.demo import COMPLETE_MARKER, demo_kind, read_demo_params  # lazy: keeps `-m dsr.data.demo` clean

    if read_demo_params(root) is None:
        flag = "" if DEMO_KINDS[kind] == "easy" else f" --difficulty {DEMO_KINDS[kind]}"
        raise FileNotFoundError(f"no finished {kind} dataset in {root} (marker {COMPLETE_MARKER} missing); build "
                                f"it with dsr.data.demo.build_demo_kind({kind!r}, root) or "
                                f"`python -m dsr.data.demo {root}{flag}`")
    found = demo_kind(root)
    if found != kind:
        raise ValueError(f"{root} holds a build of dataset kind {found!r}, not {kind!r}: use kind {found!r} or "
                         f"another root for {kind!r}")


def list_categories(kind: str, root: Path | str) -> list[str]:
    """The categories available under `root`: for mvtec and the demos the sub-folders with a train/good/ folder, for
    ksdd2/folder the one category named after the folder. Raises when there are none."""
    root = check_root(root)
    if _check_kind(kind) in ("ksdd2", "folder"):
        return [root.resolve().name]
    if is_demo_kind(kind):
        _check_demo_built(root, kind)
    categories = [p.name for p in subfolders(root) if looks_like_category(p)]
    if not categories:
        hint = (f"; {root} itself looks like a category folder: pass its parent, or use kind 'folder'"
                if looks_like_category(root) else "")
        raise ValueError(f"no category folders in {root} (expected <root>/<category>/train/good/){hint}")
    return categories


def build_dataset(
    kind: str,
    root: Path | str,
    category: str | None = None,
    split: str = "train",
    image_size: int = 256,
    channel_order: str = "rgb",
    **options: Any,
) -> AnomalyDataset:
    """The `split` ("train" or "test") of one category of a dataset of the given kind.

    category is required for mvtec and the demos; for ksdd2/folder it may be None or the folder's name (as
    `list_categories` returns it). options: antialias (all kinds), supervised_count (ksdd2).
    Raises ValueError / FileNotFoundError naming the option or path that is wrong.
    """
    _check_kind(kind)
    unknown = sorted(set(options) - _EXTRA_OPTIONS[kind])
    if unknown:
        raise ValueError(f"option(s) {unknown} not accepted by dataset kind {kind!r} "
                         f"(accepted: {sorted(_EXTRA_OPTIONS[kind])})")
    root = check_root(root)
    if kind == "mvtec" or is_demo_kind(kind):
        if category is None:
            raise ValueError(f"dataset kind {kind!r} needs a category; present: {list_categories(kind, root)}")
        if is_demo_kind(kind):
            _check_demo_built(root, kind)
        dataset = mvtec(root, category, split, image_size, channel_order, **options)
        dataset.kind = kind
        return dataset
    name = root.resolve().name
    if category is not None and category != name:
        raise ValueError(f"dataset kind {kind!r} has the single category {name!r} (the folder's name), "
                         f"got category {category!r}")
    if kind == "ksdd2":
        return ksdd2(root, split, image_size, channel_order, **options)
    return folder(root, split, image_size, channel_order, **options)
