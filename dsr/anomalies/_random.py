"""Random draws from a `torch.Generator` on any device.

Every draw happens on the generator's own device and is then moved to the compute device, so a seeded CPU
generator gives the same anomalies whether the tensors live on the CPU or a GPU. Draws from a CPU generator for
a CUDA device land in pinned memory and are copied without blocking: a plain copy from ordinary memory would
synchronise with the GPU once per draw.
"""

from __future__ import annotations

import torch
from torch import Tensor


def uniform(shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str,
            dtype: torch.dtype = torch.float32) -> Tensor:
    """U[0, 1) samples of the given shape on `device`."""
    pin = pinned_draw(generator.device, device)
    return torch.rand(shape, generator=generator, device=generator.device, dtype=dtype,
                      pin_memory=pin).to(device, non_blocking=pin)


def uniform_int(low: Tensor, high: Tensor, generator: torch.Generator) -> Tensor:
    """One integer drawn uniformly from [low, high) per element (long tensors of equal shape, high > low)."""
    u = uniform(tuple(low.shape), generator, low.device, torch.float64)
    span = (high - low).to(torch.float64)
    offset = torch.minimum((u * span).floor().long(), high - low - 1)  # guard against rounding up to span
    return low + offset


def randint(high: int, shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str) -> Tensor:
    """Integers uniform in [0, high) of the given shape on `device`."""
    pin = pinned_draw(generator.device, device)
    return torch.randint(high, shape, generator=generator, device=generator.device,
                         pin_memory=pin).to(device, non_blocking=pin)


def pinned_draw(generator_device: torch.device, device: torch.device | str, cuda_available: bool | None = None
                ) -> bool:
    """Whether a draw goes through pinned memory: CPU generator, CUDA target (and CUDA present)."""
    available = torch.cuda.is_available() if cuda_available is None else cuda_available
    return torch.device(generator_device).type == "cpu" and torch.device(device).type == "cuda" and available
