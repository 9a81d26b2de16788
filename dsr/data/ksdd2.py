"""KSDD2 (Kolektor Surface-Defect Dataset 2).

Layout: <root>/train/<N>.png with <root>/train/<N>_GT.png, and the same in <root>/test/. An image is anomalous
when its mask has any non-zero pixel. Training is unsupervised by default (normal train images only); with
supervised_count=N the first N anomalous train images (natural file order) are added with their masks, the paper's
supervised variant.
"""

from __future__ import annotations

from pathlib import Path

from dsr.data.dataset import NORMAL_FOLDER, AnomalyDataset, Sample
from dsr.data.io import mask_is_anomalous
from dsr.data.layout import check_root, check_split, image_files

GT_SUFFIX = "_GT"


def _pairs(split_dir: Path) -> list[tuple[Path, Path]]:
    """(image, mask) pairs of one split folder; raises on an image without a mask or a mask without an image."""
    files = image_files(split_dir)
    masks = {p.stem[: -len(GT_SUFFIX)]: p for p in files if p.stem.endswith(GT_SUFFIX)}
    images = [p for p in files if not p.stem.endswith(GT_SUFFIX)]
    if not images:
        raise ValueError(f"zero images in {split_dir} (expected <N>.png with <N>{GT_SUFFIX}.png masks)")
    image_stems = {p.stem for p in images}
    for stem, mask in masks.items():
        if stem not in image_stems:
            raise ValueError(f"mask {mask} has no image: expected {split_dir}/{stem}.png")
    pairs = []
    for image in images:
        if image.stem not in masks:
            raise FileNotFoundError(f"image {image} has no mask: expected {split_dir}/{image.stem}{GT_SUFFIX}.png")
        pairs.append((image, masks[image.stem]))
    return pairs


def ksdd2(
    root: Path | str, split: str, image_size: int = 256, channel_order: str = "rgb", supervised_count: int = 0,
    antialias: bool = False,
) -> AnomalyDataset:
    """The KSDD2 train or test split. supervised_count (train only; ignored for test) adds that many annotated
    anomalous train images. Raises FileNotFoundError / ValueError naming the path on a wrong layout, a missing
    mask or too few anomalous images."""
    root = check_root(root)
    check_split(split)
    if not isinstance(supervised_count, int) or isinstance(supervised_count, bool) or supervised_count < 0:
        raise ValueError(f"supervised_count must be a non-negative integer, got {supervised_count!r}")
    split_dir = root / split
    if not split_dir.is_dir():
        nested = [p.name for p in root.iterdir() if p.is_dir() and (p / "train").is_dir() and (p / "test").is_dir()]
        hint = f"; {root} holds {nested}: pass that folder as root" if nested else ""
        raise FileNotFoundError(f"expected KSDD2 folder {split_dir} (layout <root>/train/, <root>/test/ with <N>.png "
                                f"and <N>{GT_SUFFIX}.png){hint}")
    category = root.resolve().name
    samples = []
    for image, mask in _pairs(split_dir):
        label = int(mask_is_anomalous(mask))
        samples.append(Sample(image, label, mask, category, "defect" if label else NORMAL_FOLDER))
    if split == "train":
        normal = [s for s in samples if s.label == 0]
        anomalous = [s for s in samples if s.label == 1]
        if supervised_count > len(anomalous):
            raise ValueError(f"supervised_count={supervised_count} but {split_dir} has only {len(anomalous)} "
                             f"anomalous images")
        samples = normal + anomalous[:supervised_count]
        if not samples:
            raise ValueError(f"zero normal images in {split_dir} (every mask there has anomalous pixels)")
    return AnomalyDataset(samples, image_size, channel_order, antialias, name=f"{category}/{split}", kind="ksdd2")
