"""Perlin noise and the thresholded Perlin masks that shape every synthetic anomaly (DRAEM / DSR style).

Everything is vectorised over the batch: each sample has its own lattice resolution, gradients and rotation,
and no Python loop runs over samples or pixels.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dsr.anomalies import _random
from dsr.anomalies.augment import rotate
from dsr.config import DSRConfig


def _size2(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"size must be a positive int or (H, W), got {size!r}")
    return int(size[0]), int(size[1])


def _fade(t: Tensor) -> Tensor:
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def perlin_noise(size: int | tuple[int, int], scales: Tensor, generator: torch.Generator,
                 device: torch.device | str = "cpu") -> Tensor:
    """2-D gradient (Perlin) noise, one field per row of `scales`: returns (B, H, W), values about in [-1, 1].

    scales: (B, 2) integers >= 1, the lattice resolution (cells along y, cells along x) of each sample.
    The field is sampled at pixel centres, so any H, W works (a lattice with as many cells as pixels still
    gives non-zero values; sampling at the lattice points would give exact zeros there). As in DRAEM the
    value is scaled by sqrt(2), which is what the spec's threshold of 0.5 refers to.
    """
    h, w = _size2(size)
    scales = torch.as_tensor(scales).to(dtype=torch.long)  # checked where it lies: no GPU sync for CPU scales
    if scales.ndim != 2 or scales.shape[1] != 2 or bool((scales < 1).any()):
        raise ValueError(f"scales must be a (B, 2) tensor of integers >= 1, got shape {tuple(scales.shape)}")
    b = scales.shape[0]
    rows, cols = int(scales[:, 0].max()) + 1, int(scales[:, 1].max()) + 1  # lattice points of the largest scale
    scales = scales.to(device, non_blocking=True)
    angles = _random.uniform((b, rows * cols), generator, device) * (2.0 * math.pi)
    grad_y, grad_x = angles.cos(), angles.sin()  # (B, rows * cols) unit gradients at the lattice points

    # Pixel-centre coordinates in lattice units, per sample: (B, H) and (B, W).
    y = (torch.arange(h, device=device) + 0.5) / h * scales[:, :1]
    x = (torch.arange(w, device=device) + 0.5) / w * scales[:, 1:]
    y0 = torch.minimum(y.floor().long(), scales[:, :1] - 1)
    x0 = torch.minimum(x.floor().long(), scales[:, 1:] - 1)
    fy, fx = (y - y0)[:, :, None], (x - x0)[:, None, :]  # (B, H, 1), (B, 1, W) offsets inside the cell

    def corner(dy: int, dx: int) -> Tensor:  # dot(gradient at corner, offset from corner): (B, H, W)
        index = ((y0[:, :, None] + dy) * cols + (x0[:, None, :] + dx)).view(b, h * w)
        gy, gx = grad_y.gather(1, index).view(b, h, w), grad_x.gather(1, index).view(b, h, w)
        return gy * (fy - dy) + gx * (fx - dx)

    ty, tx = _fade(fy), _fade(fx)
    top = torch.lerp(corner(0, 0), corner(0, 1), tx)
    bottom = torch.lerp(corner(1, 0), corner(1, 1), tx)
    return math.sqrt(2.0) * torch.lerp(top, bottom, ty)


def random_scales(batch_size: int, generator: torch.Generator, min_exp: int, max_exp: int,
                  device: torch.device | str = "cpu") -> Tensor:
    """(B, 2) lattice resolutions 2**randint(min_exp, max_exp inclusive), independently per axis."""
    exps = _random.randint(max_exp - min_exp + 1, (batch_size, 2), generator, device) + min_exp
    return 2 ** exps


def perlin_masks(batch_size: int, size: int | tuple[int, int], generator: torch.Generator, config: DSRConfig,
                 device: torch.device | str = "cpu") -> Tensor:
    """Binary anomaly masks (B, 1, H, W) with values {0., 1.}, as the spec's feature-space anomalies use.

    Per sample: Perlin noise with x and y scales 2**randint(config.perlin_min_scale_exp,
    config.perlin_max_scale_exp) (inclusive), rotated by an angle ~ U(-90, 90) degrees (zero fill outside the
    rotated field), thresholded at config.perlin_threshold; with probability 1 - config.anomaly_probability
    the mask is all zero.
    """
    h, w = _size2(size)
    if batch_size < 0:
        raise ValueError(f"batch_size must be >= 0, got {batch_size}")
    if batch_size == 0:
        return torch.zeros(0, 1, h, w, device=device)
    # scales stay on the generator's device: perlin_noise reads the lattice size from them without a GPU sync
    scales = random_scales(batch_size, generator, config.perlin_min_scale_exp, config.perlin_max_scale_exp,
                           generator.device)
    noise = perlin_noise((h, w), scales, generator, device)  # (B, H, W)
    degrees = (_random.uniform((batch_size,), generator, device) * 2.0 - 1.0) * 90.0
    noise = rotate(noise[:, None], degrees)  # (B, 1, H, W)
    keep = _random.uniform((batch_size,), generator, device) < config.anomaly_probability
    return ((noise > config.perlin_threshold) & keep[:, None, None, None]).float()
