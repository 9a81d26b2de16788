"""A thin anomaly-detection dataset: a table of samples (image, label, mask) and a torch Dataset over it.

The loaders (`dsr.data.mvtec`, `dsr.data.ksdd2`, `dsr.data.folder`) only build the table; decoding, resizing and
the consistency checks live here so every dataset kind behaves the same.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from dsr.data.io import check_channel_order, check_image_size, decode_size, header_size, read_image, read_mask

MVTEC_CATEGORIES = (
    "bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill", "screw", "tile",
    "toothbrush", "transistor", "wood", "zipper",
)
NORMAL_FOLDER = "good"


@dataclass(frozen=True)
class Sample:
    """One image of a dataset. label is 0 (normal) or 1 (anomalous); mask_path is None for images without a
    mask file (normal images of MVTec-style folders), whose mask is all zero."""

    image_path: Path
    label: int
    mask_path: Path | None
    category: str
    defect_type: str


class DataTensors(NamedTuple):
    """A whole dataset decoded into memory, so training can sample batches without touching the disk."""

    images: torch.Tensor  # (N, 3, S, S) float in [0, 1]
    masks: torch.Tensor  # (N, 1, S, S) float in {0, 1}
    labels: torch.Tensor  # (N,) long


class AnomalyDataset(Dataset):
    """Items are dicts: image (3,S,S) float in [0,1], mask (1,S,S) float in {0,1}, label int, path str.

    Anomalous images may come without masks, all of them or none (`has_masks`); their mask item is all zero and
    must not be scored (evaluation reports pixel metrics as not defined).

    channel_order "bgr" reproduces the reference's OpenCV loading; antialias=False (default) its plain bilinear
    resize.
    Raises ValueError on an empty sample list, a bad label, masks for some anomalous samples only, and (when an item
    is read or `validate()` runs) on a corrupt file or a mask whose size differs from its image.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        image_size: int = 256,
        channel_order: str = "rgb",
        antialias: bool = False,
        name: str = "dataset",
        kind: str = "",
    ) -> None:
        self.samples = tuple(samples)
        self.image_size = check_image_size(image_size)
        self.channel_order = check_channel_order(channel_order)
        self.antialias = antialias
        self.name = name
        self.kind = kind  # the dataset kind ("mvtec", "demo", ...): decides the evaluation protocol (dsr.protocol)
        if not self.samples:
            raise ValueError(f"{name}: zero images found")
        for sample in self.samples:
            if sample.label not in (0, 1):
                raise ValueError(f"{sample.image_path}: label must be 0 or 1, got {sample.label!r}")
        anomalous = [s for s in self.samples if s.label == 1]
        unmasked = [s for s in anomalous if s.mask_path is None]
        if unmasked and len(unmasked) < len(anomalous):
            masked = next(s for s in anomalous if s.mask_path is not None)
            raise ValueError(f"anomalous image {unmasked[0].image_path} has no mask but {masked.image_path} has "
                             f"one: masks are all-or-none (none: image-level metrics only)")

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> torch.Tensor:
        """(N,) long labels, without decoding any image."""
        return torch.tensor([s.label for s in self.samples], dtype=torch.long)

    @property
    def has_masks(self) -> bool:
        """False when the anomalous images come without pixel masks (pixel metrics are then not defined)."""
        return all(s.mask_path is not None for s in self.samples if s.label == 1)

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(sorted({s.category for s in self.samples}))

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        image, image_wh = read_image(sample.image_path, self.image_size, self.channel_order, self.antialias)
        if sample.mask_path is None:
            mask = torch.zeros(1, self.image_size, self.image_size)
        else:
            mask, mask_wh = read_mask(sample.mask_path, self.image_size)
            _check_same_size(sample, image_wh, mask_wh)
            if sample.label == 0:
                mask.zero_()  # a normal image's mask is all zero by definition
        return {"image": image, "mask": mask, "label": sample.label, "path": str(sample.image_path)}

    def check_decodes(self, index: int) -> None:
        """Fully decode one sample's image and mask (not just the header): ValueError naming a corrupt file."""
        sample = self.samples[index]
        image_wh = decode_size(sample.image_path, "image")
        if sample.mask_path is not None:
            _check_same_size(sample, image_wh, decode_size(sample.mask_path, "mask"))

    def validate(self) -> None:
        """Check every file's header and structure (no decoding) and that each mask matches its image's size.

        Fast enough to run before a long training run; raises ValueError / FileNotFoundError naming the file.
        """
        for sample in self.samples:
            image_wh = header_size(sample.image_path, "image")
            if sample.mask_path is not None:
                _check_same_size(sample, image_wh, header_size(sample.mask_path, "mask"))


def _check_same_size(sample: Sample, image_wh: tuple[int, int], mask_wh: tuple[int, int]) -> None:
    if image_wh != mask_wh:
        raise ValueError(
            f"mask {sample.mask_path} is {mask_wh[0]}x{mask_wh[1]} but its image {sample.image_path} is "
            f"{image_wh[0]}x{image_wh[1]} (width x height); they must match"
        )


def load_all(dataset: AnomalyDataset, progress: bool | None = None) -> DataTensors:
    """Decode every item once into stacked tensors (images (N,3,S,S), masks (N,1,S,S), labels (N,)).

    progress: show a tqdm bar; None shows it only when stderr is a terminal.
    """
    if progress is None:
        progress = sys.stderr.isatty()
    n, size = len(dataset), dataset.image_size
    images = torch.empty(n, 3, size, size)
    masks = torch.empty(n, 1, size, size)
    labels = torch.empty(n, dtype=torch.long)
    for i in tqdm(range(n), desc=f"loading {dataset.name}", disable=not progress, leave=False):
        item = dataset[i]
        images[i], masks[i], labels[i] = item["image"], item["mask"], item["label"]
    return DataTensors(images, masks, labels)
