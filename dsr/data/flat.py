"""The flat layout users actually have: a folder of good parts beside folders of bad ones, no train/test split.

    <root>/good/*.png                    normal images: split (seeded) into train and test
    <root>/bad/*.png or <root>/<defect>/  anomalous images: all test, image-level (no masks)

The good images are split once, seeded, into train (`train_fraction`, default 0.8) and test; the split is saved as
`<root>/.dsr_split.json` so every later run (a resumed study, another variant, `predict` on the same data) uses the
same one. Good images added later go to the test split; a saved train image that has disappeared is an error.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dsr.data.dataset import NORMAL_FOLDER, Sample
from dsr.data.layout import image_files, subfolders

SPLIT_FILE = ".dsr_split.json"
DEFAULT_TRAIN_FRACTION = 0.8


def looks_flat(root: Path) -> bool:
    """good/ beside at least one other image folder, and no train/ or test/ folders."""
    if not (root / NORMAL_FOLDER).is_dir() or (root / "train").exists() or (root / "test").exists():
        return False
    return any(p.name != NORMAL_FOLDER and image_files(p) for p in subfolders(root))


def flat_samples(root: Path, split: str, category: str, train_fraction: float = DEFAULT_TRAIN_FRACTION,
                 seed: int = 0) -> list[Sample]:
    """The samples of one split of a flat folder (see the module docstring)."""
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must lie in (0, 1), got {train_fraction!r}")
    good = image_files(root / NORMAL_FOLDER)
    if len(good) < 2:
        raise ValueError(f"{root / NORMAL_FOLDER}: {len(good)} image(s); a flat folder needs at least 2 good "
                         "images to split into train and test")
    train_names = set(_train_split(root, [p.name for p in good], train_fraction, seed))
    if split == "train":
        return [Sample(p, 0, None, category, NORMAL_FOLDER) for p in good if p.name in train_names]
    samples = [Sample(p, 0, None, category, NORMAL_FOLDER) for p in good if p.name not in train_names]
    for folder in subfolders(root):
        if folder.name != NORMAL_FOLDER and folder.name != "ground_truth":
            samples += [Sample(p, 1, None, category, folder.name) for p in image_files(folder)]
    return samples


def _train_split(root: Path, names: list[str], train_fraction: float, seed: int) -> list[str]:
    """The saved train names, or a new seeded split saved beside the images (best effort on read-only data)."""
    path = root / SPLIT_FILE
    if path.is_file():
        try:
            saved = json.loads(path.read_text())["train"]
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path}: not a split file of this project ({error}); delete it to split again") from None
        missing = sorted(set(saved) - set(names))
        if missing:
            raise ValueError(f"{path} lists train image {missing[0]} which is no longer in {root / NORMAL_FOLDER} "
                             f"({len(missing)} missing); restore it, or delete {path.name} to split again")
        return saved
    order = np.random.default_rng(seed).permutation(len(names))
    count = min(max(1, int(round(train_fraction * len(names)))), len(names) - 1)
    train = sorted(names[i] for i in order[:count])
    try:
        path.write_text(json.dumps({"train": train, "train_fraction": train_fraction, "seed": seed}, indent=1))
    except OSError:
        pass  # read-only data: the split is still reproducible (seeded, sorted names)
    return train
