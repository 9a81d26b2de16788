"""Host-to-device batch copies: pinned staging memory where a copy can overlap the GPU's work.

A `non_blocking=True` copy is only asynchronous from page-locked (pinned) host memory; from ordinary memory it
is a synchronous copy. So rows for a CUDA device are gathered straight into a pinned buffer (PyTorch's caching
host allocator reuses these buffers and keeps one alive until its copy has finished), and copied without
blocking. On the CPU nothing is pinned and nothing is copied asynchronously.
"""

from __future__ import annotations

import torch


def should_pin(source: torch.Tensor, device: torch.device | str, cuda_available: bool | None = None) -> bool:
    """Whether a copy of `source` to `device` should go through pinned memory: CPU source, CUDA target."""
    device = torch.device(device)
    available = torch.cuda.is_available() if cuda_available is None else cuda_available
    return source.device.type == "cpu" and device.type == "cuda" and available


def gather_to(source: torch.Tensor, index: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """source[index] on `device`: through a pinned buffer and a non-blocking copy when `should_pin`, else a
    plain gather and copy (index: a long tensor on the source's device)."""
    device = torch.device(device)
    if not should_pin(source, device):
        return source[index.to(source.device)].to(device)
    staging = torch.empty((len(index), *source.shape[1:]), dtype=source.dtype, pin_memory=True)
    torch.index_select(source, 0, index, out=staging)
    return staging.to(device, non_blocking=True)
