"""Perlin noise and masks."""

from __future__ import annotations

import pytest
import torch

from dsr.anomalies import perlin_masks, perlin_noise
from dsr.anomalies.perlin import random_scales
from dsr.config import DSRConfig


def test_masks_are_binary_with_the_right_shape() -> None:
    masks = perlin_masks(6, (32, 48), torch.Generator().manual_seed(0), DSRConfig(anomaly_probability=1.0))
    assert masks.shape == (6, 1, 32, 48) and masks.dtype == torch.float32
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert float(masks.sum()) > 0


def test_mask_probability_follows_config() -> None:
    g = torch.Generator().manual_seed(0)
    assert float(perlin_masks(64, 32, g, DSRConfig(anomaly_probability=0.0)).sum()) == 0.0
    n = 1500
    nonempty_always = (perlin_masks(n, 16, g, DSRConfig(anomaly_probability=1.0)).flatten(1).amax(1) > 0).double()
    nonempty_half = (perlin_masks(n, 16, g, DSRConfig(anomaly_probability=0.5)).flatten(1).amax(1) > 0).double()
    assert float(nonempty_always.mean()) > 0.7  # a kept mask is rarely empty by chance
    expected = 0.5 * float(nonempty_always.mean())
    assert abs(float(nonempty_half.mean()) - expected) < 4 * (expected * (1 - expected) / n) ** 0.5 + 0.02


def test_threshold_controls_coverage() -> None:
    coverage = []
    for threshold in (0.2, 0.5, 0.8):
        config = DSRConfig(anomaly_probability=1.0, perlin_threshold=threshold)
        coverage.append(float(perlin_masks(32, 48, torch.Generator().manual_seed(0), config).mean()))
    assert coverage[0] > coverage[1] > coverage[2]


def test_reproducible_for_a_seeded_generator() -> None:
    config = DSRConfig()
    a = perlin_masks(8, 64, torch.Generator().manual_seed(5), config)
    b = perlin_masks(8, 64, torch.Generator().manual_seed(5), config)
    c = perlin_masks(8, 64, torch.Generator().manual_seed(6), config)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_scales_cover_the_configured_powers_of_two() -> None:
    scales = random_scales(4000, torch.Generator().manual_seed(0), 1, 3)
    assert set(scales.unique().tolist()) == {2, 4, 8}


def test_noise_range_and_frequency() -> None:
    g = torch.Generator().manual_seed(0)
    coarse = perlin_noise(64, torch.tensor([[1, 1]] * 8), g)
    fine = perlin_noise(64, torch.tensor([[32, 32]] * 8), g)
    assert coarse.shape == (8, 64, 64)
    assert float(coarse.abs().max()) <= 1.0 + 1e-5 and float(fine.abs().max()) <= 1.0 + 1e-5
    roughness = lambda x: float((x[:, :, 1:] - x[:, :, :-1]).abs().mean())  # noqa: E731
    assert roughness(fine) > 5 * roughness(coarse)
    assert float(fine.std()) > 0.1  # a lattice as fine as the pixels still gives a real field


def test_anisotropic_scales() -> None:
    noise = perlin_noise(64, torch.tensor([[1, 16]] * 4), torch.Generator().manual_seed(0))  # 1 cell in y, 16 in x
    along_x = float((noise[:, :, 1:] - noise[:, :, :-1]).abs().mean())
    along_y = float((noise[:, 1:, :] - noise[:, :-1, :]).abs().mean())
    assert along_x > 3 * along_y


def test_bad_scales_raise() -> None:
    with pytest.raises(ValueError, match="scales"):
        perlin_noise(16, torch.tensor([[0, 2]]), torch.Generator())
