"""Metrics against hand-computed cases and AUPRO against a brute-force threshold loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from dsr.evaluation import aupro, center_crop, image_metrics, pixel_metrics


def test_image_metrics_hand_computed() -> None:
    # positives 0.35, 0.8; negatives 0.1, 0.4. Pairs ranked right: (0.35>0.1), (0.8>0.1), (0.8>0.4) = 3 of 4.
    # Ranking 0.8(+), 0.4(-), 0.35(+), 0.1(-): AP = 1/2 * (1/1) + 1/2 * (2/3) = 5/6.
    metrics = image_metrics([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    assert metrics["image_auroc"] == pytest.approx(0.75)
    assert metrics["image_ap"] == pytest.approx(5 / 6)


def test_image_metrics_ties_and_tensors() -> None:
    metrics = image_metrics(torch.tensor([0.5, 0.5, 0.9]), torch.tensor([0, 1, 1]))
    assert metrics["image_auroc"] == pytest.approx(0.75)  # a tie counts one half: (0.5 + 1) / 2


def test_pixel_metrics_hand_computed() -> None:
    masks = np.zeros((2, 2, 2), dtype=int)
    masks[0, 0, 0] = masks[1, 1, 1] = 1
    maps = np.array([[[0.9, 0.2], [0.3, 0.1]], [[0.4, 0.0], [0.5, 0.35]]])
    # positives 0.9, 0.35; negatives 0.2, 0.3, 0.1, 0.4, 0.0, 0.5 -> 0.9 beats 6, 0.35 beats 4 -> 10 / 12
    # ranking: 0.9(+) 0.5 0.4 0.35(+) ... -> AP = 1/2 * 1 + 1/2 * 2/4 = 0.75
    metrics = pixel_metrics(maps, masks)
    assert metrics["pixel_auroc"] == pytest.approx(10 / 12)
    assert metrics["pixel_ap"] == pytest.approx(0.75)


def test_undefined_metrics_are_nan_with_a_warning() -> None:
    with pytest.warns(RuntimeWarning, match="image_auroc and image_ap undefined: all images are normal"):
        metrics = image_metrics([0.1, 0.2], [0, 0])
    assert math.isnan(metrics["image_auroc"]) and math.isnan(metrics["image_ap"])
    zeros = np.zeros((1, 4, 4))
    with pytest.warns(RuntimeWarning, match="pixel_auroc and pixel_ap undefined"):
        assert math.isnan(pixel_metrics(np.random.rand(1, 4, 4), zeros)["pixel_auroc"])
    with pytest.warns(RuntimeWarning, match="aupro undefined: no anomalous pixels"):
        assert math.isnan(aupro(np.random.rand(1, 4, 4), zeros))
    with pytest.warns(RuntimeWarning, match="aupro undefined: no normal pixels"):
        assert math.isnan(aupro(np.random.rand(1, 4, 4), np.ones((1, 4, 4))))


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="scores has 3 values but labels has 2"):
        image_metrics([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match="labels must contain only 0 and 1"):
        image_metrics([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="scores contains NaN"):
        image_metrics([0.1, float("nan")], [0, 1])
    with pytest.raises(ValueError, match="must have the same shape"):
        pixel_metrics(np.zeros((1, 4, 4)), np.zeros((1, 4, 5)))
    with pytest.raises(ValueError, match=r"shape \(N, H, W\)"):
        aupro(np.zeros((4, 4)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="max_fpr"):
        aupro(np.zeros((1, 4, 4)), np.zeros((1, 4, 4)), max_fpr=0.0)


# --- AUPRO --------------------------------------------------------------------------------------------------------


def _brute_force_aupro(maps: np.ndarray, masks: np.ndarray, max_fpr: float) -> float:
    """Threshold at every distinct score (and above the maximum); FPR and mean per-region overlap; trapezoids."""
    regions = []
    for i in range(len(masks)):
        labelled, count = ndimage.label(masks[i], structure=np.ones((3, 3)))
        regions += [(i, labelled == k) for k in range(1, count + 1)]
    normal = ~masks
    points = []
    for t in np.concatenate(([np.inf], np.unique(maps)[::-1])):
        predicted = maps >= t
        fpr = (predicted & normal).sum() / normal.sum()
        pro = np.mean([(predicted[i] & region).sum() / region.sum() for i, region in regions])
        points.append((fpr, pro))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:]):
        if x0 >= max_fpr:
            break
        if x1 <= max_fpr:
            area += (x1 - x0) * (y0 + y1) / 2
        else:
            y_cut = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)
            area += (max_fpr - x0) * (y0 + y_cut) / 2
            break
    return area / max_fpr


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("max_fpr", [0.3, 0.05, 1.0])
def test_aupro_matches_brute_force(seed: int, max_fpr: float) -> None:
    rng = np.random.default_rng(seed)
    masks = np.zeros((3, 12, 12), dtype=bool)
    masks[0, 2:5, 2:6] = True  # two regions in image 0 of different sizes
    masks[0, 8:11, 9:10] = True
    masks[1, 5:9, 4:9] = True  # image 2 is defect-free
    maps = rng.random(masks.shape) + 0.6 * masks * rng.random(masks.shape)
    maps = np.round(maps * 20) / 20  # ties between pixels, as in real maps
    expected = _brute_force_aupro(maps, masks, max_fpr)
    assert aupro(maps, masks, max_fpr=max_fpr) == pytest.approx(expected, abs=1e-12)
    assert 0.0 <= expected <= 1.0


def test_aupro_weighs_every_region_equally() -> None:
    # a 1-pixel region found first (score 0.9), a 3-pixel region last (0.1), normal pixels at 0.5:
    # curve (0,0) -> (0, 0.5) -> (1, 0.5) -> (1, 1): AUPRO = 0.5 (pixel-weighted it would be 0.25)
    masks = np.zeros((1, 4, 4), dtype=bool)
    masks[0, 0, 0] = True
    masks[0, 3, 1:4] = True
    maps = np.full((1, 4, 4), 0.5)
    maps[0, 0, 0] = 0.9
    maps[0, 3, 1:4] = 0.1
    assert aupro(maps, masks) == pytest.approx(0.5)


def test_aupro_perfect_and_inverted_maps() -> None:
    masks = np.zeros((2, 8, 8), dtype=bool)
    masks[0, 1:4, 1:4] = True
    assert aupro(masks.astype(float), masks) == pytest.approx(1.0)
    assert aupro(1.0 - masks, masks) == pytest.approx(0.0)


def test_metrics_lie_in_unit_interval() -> None:
    rng = np.random.default_rng(5)
    masks = rng.random((4, 16, 16)) > 0.8
    maps = rng.random((4, 16, 16))
    values = [*pixel_metrics(maps, masks).values(), aupro(maps, masks),
              *image_metrics(maps.max((1, 2)), [0, 1, 0, 1]).values()]
    assert all(0.0 <= v <= 1.0 for v in values)


def test_center_crop() -> None:
    t = torch.arange(2 * 256 * 256).reshape(2, 256, 256)
    cropped = center_crop(t, 224)
    assert cropped.shape == (2, 224, 224) and cropped[0, 0, 0] == t[0, 16, 16]
    array = np.arange(5 * 7).reshape(5, 7)
    assert np.array_equal(center_crop(array, 3), array[1:4, 2:5])
    assert center_crop(t, None) is t
    with pytest.raises(ValueError, match="center_crop size"):
        center_crop(t, 300)
