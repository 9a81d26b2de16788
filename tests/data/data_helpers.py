"""Helpers that write tiny on-disk datasets with PIL for the data tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_png(path: Path, size: tuple[int, int] = (12, 10), value: int | tuple = 128, mode: str = "RGB",
              array: np.ndarray | None = None) -> Path:
    """Write a small PNG (size = width x height) filled with `value`, or the given array."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array) if array is not None else Image.new(mode, size, value)
    image.save(path)
    return path


def write_mask(path: Path, size: tuple[int, int] = (12, 10), box: tuple[int, int, int, int] | None = (2, 2, 6, 5)
               ) -> Path:
    """A 0/255 mask with a filled box (x0, y0, x1, y1), or an all-zero mask when box is None."""
    array = np.zeros((size[1], size[0]), dtype=np.uint8)
    if box is not None:
        x0, y0, x1, y1 = box
        array[y0:y1, x0:x1] = 255
    return write_png(path, array=array)


def make_category(base: Path, train: int = 3, good: int = 2, defects: dict[str, int] | None = None) -> Path:
    """An MVTec-layout category folder at `base`."""
    defects = {"scratch": 2} if defects is None else defects
    for i in range(train):
        write_png(base / "train" / "good" / f"{i:03d}.png", value=(100 + i, 90, 80))
    for i in range(good):
        write_png(base / "test" / "good" / f"{i:03d}.png", value=(110, 100, 90))
    for defect, count in defects.items():
        for i in range(count):
            write_png(base / "test" / defect / f"{i:03d}.png", value=(200, 50, 40))
            write_mask(base / "ground_truth" / defect / f"{i:03d}_mask.png")
    return base


def make_ksdd2(root: Path, anomalous: dict[str, list[int]], normal: dict[str, list[int]]) -> Path:
    """KSDD2 layout: <root>/<split>/<N>.png and <N>_GT.png; anomalous ones get a non-empty mask."""
    for split in ("train", "test"):
        for n in anomalous.get(split, []):
            write_png(root / split / f"{n}.png", size=(8, 20), value=(60, 60, 60))
            write_mask(root / split / f"{n}_GT.png", size=(8, 20), box=(1, 3, 4, 9))
        for n in normal.get(split, []):
            write_png(root / split / f"{n}.png", size=(8, 20), value=(50, 50, 50))
            write_mask(root / split / f"{n}_GT.png", size=(8, 20), box=None)
    return root
