"""evaluate_model with stand-in models on a tiny on-disk test set, and mean_over_categories."""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from dsr.data import folder, load_all
from dsr.evaluation import METRIC_NAMES, aupro, evaluate_model, image_metrics, mean_over_categories, pixel_metrics


class Prediction(NamedTuple):  # the model contract: DSR.predict returns these two named fields
    image_scores: torch.Tensor  # (B,)
    pixel_maps: torch.Tensor  # (B, H, W)


class Brightness(nn.Module):
    """Stand-in model: a pixel is as anomalous as it is bright, plus a fixed noise pattern; the image score is
    the highest pixel. Deterministic and independent of batching."""

    def __init__(self, noise: float = 0.0, size: int = 16) -> None:
        super().__init__()
        self.register_buffer("pattern", noise * torch.rand(size, size, generator=torch.Generator().manual_seed(0)))
        self.calls = 0

    def predict(self, images: torch.Tensor) -> Prediction:
        self.calls += 1
        maps = images.mean(1) + self.pattern  # (B, H, W)
        return Prediction(maps.flatten(1).amax(1), maps)


class WrongSize(nn.Module):
    def predict(self, images: torch.Tensor) -> Prediction:
        return Prediction(images.mean((1, 2, 3)), images[:, 0, :-1])


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def spots(tmp_path: Path) -> Path:
    """Dark 16x16 images; anomalous ones carry a bright square (its mask) at a different place each."""
    root = tmp_path / "spots"
    dark = np.full((16, 16, 3), 40, dtype=np.uint8)
    _write(root / "train" / "good" / "0.png", dark)
    for i in range(3):
        _write(root / "test" / "good" / f"{i}.png", dark + 5 * i)
        image, mask = dark.copy(), np.zeros((16, 16), dtype=np.uint8)
        image[2 + 3 * i:6 + 3 * i, 1 + 4 * i:5 + 4 * i] = 230
        mask[2 + 3 * i:6 + 3 * i, 1 + 4 * i:5 + 4 * i] = 255
        _write(root / "test" / "spot" / f"{i}.png", image)
        _write(root / "ground_truth" / "spot" / f"{i}_mask.png", mask)
    return root


def test_perfect_stand_in_scores_one(spots: Path) -> None:
    metrics = evaluate_model(Brightness(), folder(spots, "test", image_size=16), batch_size=4)
    assert set(metrics) == set(METRIC_NAMES)
    assert all(value == pytest.approx(1.0) for value in metrics.values())


def test_matches_metrics_on_collected_predictions(spots: Path) -> None:
    test = folder(spots, "test", image_size=16)
    model = Brightness(noise=0.8)
    metrics = evaluate_model(model, test, batch_size=4)
    assert model.calls == 2  # 6 images in batches of 4
    data = load_all(test, progress=False)
    prediction = model.predict(data.images)
    masks = data.masks[:, 0]
    expected = {**image_metrics(prediction.image_scores, data.labels),
                **pixel_metrics(prediction.pixel_maps, masks), "aupro": aupro(prediction.pixel_maps, masks)}
    assert metrics == pytest.approx(expected)
    assert min(metrics.values()) < 1.0  # the noise does cost something


def test_in_memory_tensors_give_the_same_result(spots: Path) -> None:
    test = folder(spots, "test", image_size=16)
    from_disk = evaluate_model(Brightness(noise=0.5), test, batch_size=2)
    from_memory = evaluate_model(Brightness(noise=0.5), load_all(test, progress=False), batch_size=2)
    assert from_memory == pytest.approx(from_disk)


def test_center_crop_applies_to_pixel_metrics_only(spots: Path) -> None:
    test = folder(spots, "test", image_size=16)
    full = evaluate_model(Brightness(noise=0.6), test, batch_size=8)
    cropped = evaluate_model(Brightness(noise=0.6), test, batch_size=8, center_crop=8)
    assert cropped["image_auroc"] == full["image_auroc"]
    data = load_all(test, progress=False)
    maps = Brightness(noise=0.6).predict(data.images).pixel_maps[:, 4:12, 4:12]
    assert cropped["pixel_ap"] == pytest.approx(pixel_metrics(maps, data.masks[:, 0, 4:12, 4:12])["pixel_ap"])


def test_restores_training_mode_and_checks_shapes(spots: Path) -> None:
    model = Brightness()
    model.train()
    evaluate_model(model, folder(spots, "test", image_size=16))
    assert model.training
    with pytest.raises(ValueError, match=r"pixel maps of shape \(6, 15, 16\) for masks of shape \(6, 16, 16\)"):
        evaluate_model(WrongSize(), folder(spots, "test", image_size=16))
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_model(model, folder(spots, "test", image_size=16), batch_size=0)


def test_mean_over_categories() -> None:
    per_category = {"a": {"image_auroc": 0.9, "pixel_ap": 0.5}, "b": {"image_auroc": 0.7, "pixel_ap": 0.3}}
    assert mean_over_categories(per_category) == pytest.approx({"image_auroc": 0.8, "pixel_ap": 0.4})
    per_category["c"] = {"image_auroc": float("nan"), "pixel_ap": 0.1}
    with pytest.warns(RuntimeWarning, match=r"image_auroc leaves out categories \['c'\]"):
        means = mean_over_categories(per_category)
    assert means == pytest.approx({"image_auroc": 0.8, "pixel_ap": 0.3})
    with pytest.warns(RuntimeWarning):
        assert math.isnan(mean_over_categories({"a": {"aupro": float("nan")}})["aupro"])
    with pytest.raises(ValueError, match="at least one category"):
        mean_over_categories({})
