"""Folder-layout helpers every dataset kind shares: natural file order, image listing, split and root checks."""

from __future__ import annotations

import re
from pathlib import Path

from dsr.data.dataset import NORMAL_FOLDER
from dsr.data.io import is_image_file

SPLITS = ("train", "test")


def natural_key(path: Path) -> list:
    """Sort key that orders '2.png' before '10.png'."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def image_files(folder: Path) -> list[Path]:
    """The image files directly inside `folder`, in natural order."""
    return sorted((p for p in folder.iterdir() if is_image_file(p)), key=natural_key)


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def check_root(root: Path | str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist or is not a folder")
    return root


def looks_like_category(folder: Path) -> bool:
    """A folder with the MVTec per-category layout (train/good inside)."""
    return (folder / "train" / NORMAL_FOLDER).is_dir()


def subfolders(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=natural_key)
