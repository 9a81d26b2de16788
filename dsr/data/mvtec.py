"""MVTec AD and the generic user folder: the same layout, with or without the category level.

MVTec AD:  <root>/<category>/train/good/*.png
           <root>/<category>/test/good/*.png            (normal test images)
           <root>/<category>/test/<defect>/*.png        (anomalous, label 1)
           <root>/<category>/ground_truth/<defect>/<stem>_mask.png   (optional: all anomalous images or none)
Folder:    the same without <category>: <root>/train/good/*, optional <root>/test/good/*, <root>/test/<defect>/*
           with masks at <root>/ground_truth/<defect>/<stem>_mask.png; its one category is named after <root>.
           Or flat: <root>/good/* beside <root>/bad/* (or named defect folders), split seeded (dsr.data.flat).
Any image extension in IMAGE_EXTENSIONS is accepted; hidden files and other extensions are ignored.
"""

from __future__ import annotations

from pathlib import Path

from dsr.data.dataset import NORMAL_FOLDER, AnomalyDataset, Sample
from dsr.data.flat import DEFAULT_TRAIN_FRACTION, flat_samples, looks_flat
from dsr.data.layout import check_root, check_split, image_files, looks_like_category, subfolders

MASK_SUFFIX = "_mask"


def _train_samples(base: Path, category: str) -> list[Sample]:
    good = base / "train" / NORMAL_FOLDER
    if not good.is_dir():
        raise FileNotFoundError(f"expected normal training images in {good}, which does not exist")
    files = image_files(good)
    if not files:
        raise ValueError(f"zero images in {good} (extensions looked for: any image file type)")
    return [Sample(p, 0, None, category, NORMAL_FOLDER) for p in files]


def _test_samples(base: Path, category: str) -> list[Sample]:
    test = base / "test"
    if not test.is_dir():
        raise FileNotFoundError(f"expected test images in {test}/<good or defect>/, but {test} does not exist")
    loose = image_files(test)
    if loose:
        raise ValueError(f"found images directly in {test} (e.g. {loose[0].name}); expected them in "
                         f"sub-folders {test}/good/ and {test}/<defect type>/")
    samples: list[Sample] = []
    defect_folders = []
    for folder in subfolders(test):
        files = image_files(folder)
        if folder.name == NORMAL_FOLDER:
            samples += [Sample(p, 0, None, category, NORMAL_FOLDER) for p in files]
            continue
        defect_folders.append(folder.name)
        masks_dir = base / "ground_truth" / folder.name
        for image in files:
            mask = masks_dir / f"{image.stem}{MASK_SUFFIX}.png"
            samples.append(Sample(image, 1, mask if mask.is_file() else None, category, folder.name))
    check_masks_all_or_none(samples, lambda image: base / "ground_truth" / image.parent.name /
                            f"{image.stem}{MASK_SUFFIX}.png")
    _check_masks_have_images(base, defect_folders)
    if not samples:
        raise ValueError(f"zero test images in the sub-folders of {test}")
    return samples


def check_masks_all_or_none(samples: list[Sample], expected_mask) -> None:
    """Pixel masks are optional, but all-or-none: with masks for some anomalous images and not for others the
    pixel metrics would silently cover part of the test set, so that is an error naming one of each."""
    anomalous = [s for s in samples if s.label == 1]
    with_mask = [s for s in anomalous if s.mask_path is not None]
    without = [s for s in anomalous if s.mask_path is None]
    if with_mask and without:
        missing = without[0].image_path
        raise FileNotFoundError(
            f"anomalous test image {missing} has no mask (expected {expected_mask(missing)}) but "
            f"{with_mask[0].image_path} has one ({with_mask[0].mask_path}): give every anomalous image a mask, "
            f"or none (image-level metrics only)")


def _check_masks_have_images(base: Path, defect_folders: list[str]) -> None:
    """Every mask under ground_truth/ must belong to a test image (else the layout or names are wrong)."""
    gt = base / "ground_truth"
    if not gt.is_dir():
        return
    for folder in subfolders(gt):
        test_dir = base / "test" / folder.name
        stems = {p.stem for p in image_files(test_dir)} if folder.name in defect_folders else set()
        for mask in image_files(folder):
            if not mask.stem.endswith(MASK_SUFFIX):
                raise ValueError(f"mask file {mask} should be named <image stem>{MASK_SUFFIX}.png")
            stem = mask.stem[: -len(MASK_SUFFIX)]
            if stem not in stems:
                raise ValueError(f"mask {mask} has no image: expected {test_dir}/{stem}.<ext>")


def category_samples(base: Path, category: str, split: str) -> list[Sample]:
    """The samples of one MVTec-layout category folder `base`."""
    return _train_samples(base, category) if check_split(split) == "train" else _test_samples(base, category)


def mvtec(
    root: Path | str, category: str, split: str, image_size: int = 256, channel_order: str = "rgb",
    antialias: bool = False,
) -> AnomalyDataset:
    """One MVTec AD category (`root` is the folder holding the category folders). Raises FileNotFoundError /
    ValueError naming the path on a wrong layout, zero images or a missing mask."""
    root = check_root(root)
    check_split(split)
    base = root / category
    if not base.is_dir():
        present = [p.name for p in subfolders(root) if looks_like_category(p)]
        hint = ""
        if looks_like_category(root):
            hint = f"; {root} itself looks like a category folder: pass its parent {root.parent} as root"
        raise FileNotFoundError(f"category folder {base} not found (expected <root>/<category>/train/good/); "
                                f"categories present in {root}: {present}{hint}")
    samples = category_samples(base, category, split)
    return AnomalyDataset(samples, image_size, channel_order, antialias, name=f"{category}/{split}", kind="mvtec")


def folder(
    root: Path | str, split: str, image_size: int = 256, channel_order: str = "rgb", antialias: bool = False,
    train_fraction: float | None = None,
) -> AnomalyDataset:
    """A user folder in the MVTec layout without the category level (see the module docstring). Its category is
    named after the folder. A flat folder (good/ beside bad/) is split seeded, `train_fraction` (default 0.8) of
    its good images for training (see dsr.data.flat). Raises like `mvtec`, and says so when `root` holds category
    folders instead."""
    root = check_root(root)
    check_split(split)
    if not looks_like_category(root) and looks_flat(root):  # good/ beside bad/ (or named defect folders)
        category = root.resolve().name
        fraction = DEFAULT_TRAIN_FRACTION if train_fraction is None else train_fraction
        return AnomalyDataset(flat_samples(root, split, category, fraction), image_size, channel_order, antialias,
                              name=f"{category}/{split}", kind="folder")
    if not looks_like_category(root):
        nested = [p.name for p in subfolders(root) if looks_like_category(p)]
        hint = (f"; it holds category folders {nested}: pass one of them as root, or use kind 'mvtec'"
                if nested else "")
        raise FileNotFoundError(f"expected {root / 'train' / NORMAL_FOLDER} with normal images "
                                f"(layout <root>/train/good/, <root>/test/<defect>/, <root>/ground_truth/; "
                                f"or flat: <root>/good/ beside <root>/bad/){hint}")
    category = root.resolve().name
    return AnomalyDataset(category_samples(root, category, split), image_size, channel_order, antialias,
                          name=f"{category}/{split}", kind="folder")
