"""Numeric precision: what "auto" means on a device, the autocast context, and TF32 on CUDA.

"auto" resolves per device: bf16 autocast on a CUDA device that supports bf16 (Ampere and later), fp32 elsewhere
(the CPU included, where "auto" is exactly "fp32": no autocast, no global flag touched). On CUDA, "auto" also lets
the fp32 matmuls and convolutions that stay outside autocast use TF32. The nearest-code decisions and EMA updates
of the quantisers always run in fp32 with autocast off (dsr.model.quantizer).

Device capabilities can be injected (`bf16_supported=`), so the CUDA branches are testable on a CPU-only machine.
"""

from __future__ import annotations

import torch

PRECISIONS = ("auto", "fp32", "bf16")
RESOLVED = ("fp32", "bf16")


def cuda_bf16_supported(device: torch.device) -> bool:
    """Whether this CUDA device runs bf16 natively (False when CUDA is not available)."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    with torch.cuda.device(device):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def resolve_precision(precision: str, device: torch.device | str, bf16_supported: bool | None = None) -> str:
    """ "fp32" or "bf16" for a configured precision on a device.

    "fp32" and "bf16" are kept as given (an explicit "bf16" autocasts on the CPU too); "auto" is "bf16" on a CUDA
    device with native bf16 (bf16_supported: inject the capability, default: ask the device), else "fp32".
    Raises ValueError for an unknown precision.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    device = torch.device(device)
    if device.type != "cuda":
        return "fp32"
    supported = cuda_bf16_supported(device) if bf16_supported is None else bf16_supported
    return "bf16" if supported else "fp32"


def autocast_dtype(resolved: str) -> torch.dtype | None:
    """The autocast dtype of a resolved precision: torch.bfloat16 for "bf16", None (no autocast) for "fp32"."""
    if resolved not in RESOLVED:
        raise ValueError(f"resolved precision must be one of {RESOLVED}, got {resolved!r}")
    return torch.bfloat16 if resolved == "bf16" else None


def autocast(device: torch.device | str, precision: str, bf16_supported: bool | None = None) -> torch.autocast:
    """The autocast context for `precision` on `device` (a disabled one when it resolves to fp32).

    On CUDA, "auto" also enables TF32 (see `enable_tf32`) the first time it is entered.
    """
    device = torch.device(device)
    resolved = resolve_precision(precision, device, bf16_supported)
    if precision == "auto":
        enable_tf32(device)
    dtype = autocast_dtype(resolved)
    return torch.autocast(device_type=device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def wants_tf32(precision: str, device: torch.device | str) -> bool:
    """TF32 is part of "auto" on CUDA only; explicit "fp32" keeps PyTorch's defaults (no TF32 matmuls)."""
    return precision == "auto" and torch.device(device).type == "cuda"


def enable_tf32(device: torch.device | str) -> bool:
    """Let fp32 matmuls and cuDNN convolutions use TF32 on CUDA (process-wide flags); no-op elsewhere.

    Returns whether the flags were set. Idempotent, so a trial may call it at its start and `autocast` again.
    """
    if torch.device(device).type != "cuda":
        return False
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return True


def resolve_device(requested: str | torch.device | None = None, cuda_available: bool | None = None) -> torch.device:
    """The device to train on: `requested` when given, else "cuda" when available (injectable), else "cpu"."""
    if requested is not None:
        return torch.device(requested)
    available = torch.cuda.is_available() if cuda_available is None else cuda_available
    return torch.device("cuda" if available else "cpu")
