"""Random draws from a `torch.Generator` on any device.

Every draw happens on the generator's own device and is then moved to the compute device, so a seeded CPU
generator gives the same anomalies whether the tensors live on the CPU or a GPU.
"""

from __future__ import annotations

import torch
from torch import Tensor


def uniform(shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str,
            dtype: torch.dtype = torch.float32) -> Tensor:
    """U[0, 1) samples of the given shape on `device`."""
    return torch.rand(shape, generator=generator, device=generator.device, dtype=dtype).to(device)


def uniform_int(low: Tensor, high: Tensor, generator: torch.Generator) -> Tensor:
    """One integer drawn uniformly from [low, high) per element (long tensors of equal shape, high > low)."""
    u = uniform(tuple(low.shape), generator, low.device, torch.float64)
    span = (high - low).to(torch.float64)
    offset = torch.minimum((u * span).floor().long(), high - low - 1)  # guard against rounding up to span
    return low + offset


def randint(high: int, shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str) -> Tensor:
    """Integers uniform in [0, high) of the given shape on `device`."""
    return torch.randint(high, shape, generator=generator, device=generator.device).to(device)
