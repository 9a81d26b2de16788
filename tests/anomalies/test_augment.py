"""Rotation augmentation."""

from __future__ import annotations

import pytest
import torch

from dsr.anomalies import random_rotation, rotate


def test_rotate_90_degrees_matches_rot90() -> None:
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    rotated = rotate(images, torch.tensor([90.0, -90.0]))
    assert torch.allclose(rotated[0], torch.rot90(images[0], 1, dims=(1, 2)), atol=1e-5)
    assert torch.allclose(rotated[1], torch.rot90(images[1], -1, dims=(1, 2)), atol=1e-5)


def test_probability_zero_and_one() -> None:
    images = torch.rand(16, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    assert torch.equal(random_rotation(images, 0.0, 90.0, g), images)
    rotated = random_rotation(images, 1.0, 90.0, g)
    changed = (rotated - images).flatten(1).abs().amax(1) > 1e-3
    assert bool(changed.all())


def test_fraction_rotated_follows_probability() -> None:
    images = torch.rand(1, 1, 8, 8).expand(2000, 1, 8, 8).contiguous()
    out = random_rotation(images, 0.4, 90.0, torch.Generator().manual_seed(0))
    changed = (out != images).flatten(1).any(1).double().mean()
    assert abs(float(changed) - 0.4) < 0.05


def test_angles_stay_within_max() -> None:
    """A lone centre-row pixel rotated by <= 10 degrees stays in the central band."""
    images = torch.zeros(200, 1, 33, 33)
    images[:, :, 16, 30] = 1.0
    out = random_rotation(images, 1.0, 10.0, torch.Generator().manual_seed(0))
    rows = (out[:, 0].sum(2) > 1e-3).nonzero()[:, 1]
    assert int((rows - 16).abs().max()) <= 3  # 14 px from the centre * sin(10 deg) = 2.4 px


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="probability"):
        random_rotation(torch.zeros(1, 1, 4, 4), 1.5, 10.0, torch.Generator())
    with pytest.raises(ValueError, match="max_degrees"):
        random_rotation(torch.zeros(1, 1, 4, 4), 0.5, -1.0, torch.Generator())
