"""Per-image evaluation records: what a report needs to bootstrap intervals and draw maps, saved beside a model.

Metrics alone cannot say whether a 2-point AUROC gap is noise. A trial therefore also saves, per test image, its
image score and label, a fixed seeded subsample of its pixels (scores and mask labels, every anomalous pixel kept
up to a cap) for pixel AP, and small uint8 thumbnails of the image, its mask and its anomaly map for galleries.
Reports resample these; they never need the model or the data again. A few hundred KB for 100 test images.
Records also keep image AUROC and pixel AP per defect type (test folder name) on the full maps, each against every
normal test image, so a report can show which kind of defect a model misses (`EvaluationRecords.by_defect`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from dsr.evaluation.evaluate import (NORMAL_TYPE, defect_metrics, has_masks, metrics_from_predictions,
                                     predict_all)
from dsr.evaluation.metrics import center_crop as crop

THUMBNAIL_SIZE = 64  # side of the stored image, mask and map thumbnails
PIXEL_SAMPLES = 512  # pixels kept per image for the pixel-AP bootstrap
RECORDS_FILE = "records.npz"  # its name beside a trial's model (studies write it, reports read it)
RECORDS_FORMAT = "dsr-studies/records/2"  # 2: per-defect metrics added
READABLE_FORMATS = ("dsr-studies/records/1", RECORDS_FORMAT)  # format 1 has no per-defect pixel AP


@dataclass
class EvaluationRecords:
    """Per-image results of one evaluation (N test images)."""

    paths: np.ndarray  # (N,) str: image file names relative to the dataset's category folder where possible
    defect_types: np.ndarray  # (N,) str: "good" or the defect folder
    labels: np.ndarray  # (N,) int8: 1 = anomalous
    image_scores: np.ndarray  # (N,) float32
    pixel_scores: np.ndarray  # (N, P) float16: sampled map values (inside the evaluation crop)
    pixel_labels: np.ndarray  # (N, P) bool: the mask at those pixels
    has_masks: bool  # False: the dataset has no pixel masks, pixel metrics are not defined
    center_crop: int  # the crop of the pixel metrics (0: none)
    images: np.ndarray  # (N, T, T, 3) uint8 thumbnails
    masks: np.ndarray  # (N, T, T) uint8 (0/255)
    maps: np.ndarray  # (N, T, T) uint8: anomaly probability x 255
    # per defect type (sorted), on the full maps, against all normal test images (NaN: not defined / not stored)
    defect_names: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=str))  # (D,) str
    defect_image_auroc: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))  # (D,)
    defect_pixel_ap: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))  # (D,)

    def __len__(self) -> int:
        return len(self.labels)

    def by_defect(self) -> dict[str, dict[str, float]]:
        """{defect type: {"image_auroc", "pixel_ap"}} (fractions), every anomalous type of the test set.

        The stored full-data values; records without them (format 1, or built by hand) get image AUROC from the
        stored scores (exact) and NaN pixel AP (the pixel subsample would overstate it).
        """
        stored = {str(name): {"image_auroc": float(auroc), "pixel_ap": float(ap)} for name, auroc, ap in
                  zip(self.defect_names, self.defect_image_auroc, self.defect_pixel_ap)}
        out = {}
        for defect in sorted({str(t) for t in self.defect_types} - {NORMAL_TYPE}):
            out[defect] = stored.get(defect) or {"image_auroc": _image_auroc(self, defect), "pixel_ap": math.nan}
        return out

    def select(self, index: np.ndarray) -> "EvaluationRecords":
        """The records of some images only (index: positions or a boolean mask); per-defect values are kept."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in _PER_IMAGE:
            values[name] = values[name][index]
        return EvaluationRecords(**values)

    def of_defect(self, defect: str) -> "EvaluationRecords":
        """The normal images and the images of one defect type: the test set of that type's breakdown."""
        types = self.defect_types.astype(str)
        if defect not in set(types.tolist()) - {NORMAL_TYPE}:
            raise ValueError(f"no test images of defect type {defect!r}; types: {sorted(set(types.tolist()))}")
        return self.select((types == NORMAL_TYPE) | (types == defect))


_PER_IMAGE = ("paths", "defect_types", "labels", "image_scores", "pixel_scores", "pixel_labels", "images", "masks",
              "maps")


def _image_auroc(records: EvaluationRecords, defect: str) -> float:
    """Image AUROC of one defect type against all normal images, from the stored scores (NaN if undefined)."""
    from dsr.evaluation.metrics import image_metrics

    types = records.defect_types.astype(str)
    chosen = (types == NORMAL_TYPE) | (types == defect)
    if not (types == NORMAL_TYPE).any():
        return math.nan
    return image_metrics(records.image_scores[chosen], records.labels[chosen])["image_auroc"]


def evaluate_with_records(model: torch.nn.Module, dataset, batch_size: int = 8, device: str | torch.device = "cpu",
                          center_crop: int | None = None, pixel_samples: int = PIXEL_SAMPLES, seed: int = 0
                          ) -> tuple[dict[str, float], EvaluationRecords]:
    """The metrics of `evaluate_model` and the per-image records behind them, from one prediction pass.

    `dataset` must expose `samples` (image_path, defect_type) and return image tensors, as AnomalyDataset does.
    """
    scores, maps, labels, masks = predict_all(model, dataset, batch_size, device)
    images = _thumbnail_images(dataset)
    with_masks = has_masks(dataset)
    metrics = metrics_from_predictions(scores, maps, labels, masks, with_masks, center_crop)
    cropped_maps, cropped_masks = crop(maps, center_crop), crop(masks, center_crop)
    pixel_scores, pixel_labels = sample_pixels(cropped_maps, cropped_masks, pixel_samples, seed)
    samples = dataset.samples
    types = [s.defect_type for s in samples]
    per_defect = defect_metrics(scores, maps, labels, masks, types, with_masks, center_crop)
    records = EvaluationRecords(
        paths=np.array([test_image_name(s.image_path) for s in samples]),
        defect_types=np.array([s.defect_type for s in samples]),
        labels=labels.astype(np.int8),
        image_scores=scores.astype(np.float32),
        pixel_scores=pixel_scores.astype(np.float16),
        pixel_labels=pixel_labels,
        has_masks=with_masks,
        center_crop=int(center_crop or 0),
        images=images,
        masks=_thumbnail(masks.astype(np.float32)),
        maps=_thumbnail(maps),
        defect_names=np.array(list(per_defect), dtype=str),
        defect_image_auroc=np.array([v["image_auroc"] for v in per_defect.values()], dtype=np.float64),
        defect_pixel_ap=np.array([v["pixel_ap"] for v in per_defect.values()], dtype=np.float64),
    )
    return metrics, records


def sample_pixels(maps: np.ndarray, masks: np.ndarray, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(N, count) map values and mask labels per image: all anomalous pixels up to half of `count`, the rest
    drawn uniformly from the normal ones (seeded), so pixel AP on the subsample tracks the full one."""
    rng = np.random.default_rng(seed)
    n = len(maps)
    flat_maps, flat_masks = maps.reshape(n, -1), masks.reshape(n, -1).astype(bool)
    count = min(count, flat_maps.shape[1])
    scores = np.zeros((n, count), dtype=np.float32)
    truth = np.zeros((n, count), dtype=bool)
    for i in range(n):
        positive = np.flatnonzero(flat_masks[i])
        negative = np.flatnonzero(~flat_masks[i])
        take_pos = positive if len(positive) <= count // 2 else rng.choice(positive, count // 2, replace=False)
        take_neg = rng.choice(negative, min(len(negative), count - len(take_pos)), replace=False)
        chosen = np.concatenate([take_pos, take_neg])
        scores[i, : len(chosen)], truth[i, : len(chosen)] = flat_maps[i, chosen], flat_masks[i, chosen]
    return scores, truth


def save_records(records: EvaluationRecords, path: str | Path) -> Path:
    """Write records as one compressed .npz (no pickled objects)."""
    path = Path(path)
    values: dict[str, Any] = {f.name: getattr(records, f.name) for f in fields(records)}
    values["has_masks"] = np.array(records.has_masks)
    values["center_crop"] = np.array(records.center_crop)
    values["paths"] = records.paths.astype(str)
    values["defect_types"] = records.defect_types.astype(str)
    values["defect_names"] = records.defect_names.astype(str)
    np.savez_compressed(path, format=np.array(RECORDS_FORMAT), **values)
    return path


def load_records(path: str | Path) -> EvaluationRecords:
    """Read records written by `save_records`; ValueError naming the file if it is not one."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if "format" not in data or str(data["format"]) not in READABLE_FORMATS:
                raise ValueError(f"{path}: not an evaluation records file of this project ({RECORDS_FORMAT})")
            optional = {"defect_names", "defect_image_auroc", "defect_pixel_ap"}  # absent from format 1
            values = {f.name: data[f.name] for f in fields(EvaluationRecords)
                      if f.name not in optional or f.name in data}
    except (OSError, KeyError, EOFError) as error:
        raise ValueError(f"{path}: unreadable evaluation records ({error})") from error
    values["has_masks"] = bool(values["has_masks"])
    values["center_crop"] = int(values["center_crop"])
    return EvaluationRecords(**values)


def test_image_name(path: Path | str) -> str:
    """"<defect or good>/<file>": a test image's name, stable across machines and dataset roots."""
    return "/".join(Path(path).parts[-2:])


def _thumbnail(batch: np.ndarray) -> np.ndarray:
    """(N, S, S) values in [0, 1] -> (N, T, T) uint8, area-averaged."""
    tensor = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))[:, None]
    small = F.adaptive_avg_pool2d(tensor, min(THUMBNAIL_SIZE, tensor.shape[-1]))[:, 0]
    return (small.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def _thumbnail_images(dataset) -> np.ndarray:
    """(N, T, T, 3) uint8 thumbnails of every image of the dataset, in its channel order's RGB view."""
    thumbs = []
    for index in range(len(dataset)):
        image = dataset[index]["image"]  # (3, S, S)
        if getattr(dataset, "channel_order", "rgb") == "bgr":
            image = image.flip(0)
        small = F.adaptive_avg_pool2d(image[None].float(), min(THUMBNAIL_SIZE, image.shape[-1]))[0]
        thumbs.append((small.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy())
    return np.stack(thumbs)
