"""Batched rotations: the training augmentation and the Perlin-mask rotation share one resampler."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from dsr.anomalies import _random


def rotate(images: Tensor, degrees: Tensor, mode: str = "bilinear") -> Tensor:
    """Rotate each image (B,C,H,W) about its centre by its own angle `degrees` (B,), filling with zeros.

    Positive angles turn the content counter-clockwise on screen. Sizes are kept (corners are cut, the
    uncovered border becomes 0), as imgaug's Affine(rotate=...) does in the reference.
    """
    b, _, h, w = images.shape
    dtype = images.dtype if images.dtype == torch.float64 else torch.float32  # sample in fp32 at least
    radians = degrees.to(device=images.device, dtype=dtype) * (math.pi / 180.0)
    cos, sin = radians.cos(), radians.sin()
    # Map output pixel (x, y) to the input pixel R(-angle)(x, y), written in normalised [-1, 1] coordinates;
    # the h/w factors keep the rotation rigid on non-square images.
    theta = torch.zeros(b, 2, 3, device=images.device, dtype=dtype)
    theta[:, 0, 0] = cos
    theta[:, 0, 1] = -sin * h / w
    theta[:, 1, 0] = sin * w / h
    theta[:, 1, 1] = cos
    grid = F.affine_grid(theta, [b, images.shape[1], h, w], align_corners=False)
    return F.grid_sample(images.to(dtype), grid, mode=mode, padding_mode="zeros", align_corners=False).to(images.dtype)


def random_rotation(images: Tensor, probability: float, max_degrees: float, generator: torch.Generator) -> Tensor:
    """Rotate each image of (B,C,H,W) with `probability` by an angle ~ U(-max_degrees, max_degrees).

    This is the stage-2/3 augmentation (config.stage2_rotation_probability / stage3_rotation_probability,
    config.max_rotation_degrees). Images that are not picked are returned bit-identical.
    Raises ValueError for a probability outside [0, 1] or negative max_degrees.
    """
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"random_rotation: probability must lie in [0, 1], got {probability!r}")
    if max_degrees < 0:
        raise ValueError(f"random_rotation: max_degrees must be >= 0, got {max_degrees!r}")
    b = images.shape[0]
    # which images turn is decided on the generator's device, so the check below never waits for a GPU
    picked = (_random.uniform((b,), generator, generator.device) < probability).nonzero().squeeze(1)
    degrees = (_random.uniform((b,), generator, images.device) * 2.0 - 1.0) * max_degrees
    out = images.clone()
    if picked.numel():
        picked = picked.to(images.device, non_blocking=True)
        out[picked] = rotate(images[picked], degrees[picked])
    return out
