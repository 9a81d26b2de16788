"""The device a trial trains on: the GPU Ray gave it, or the CPU; never the CPU in silence when a GPU was given.

A trial placed with `--gpus-per-trial` on a node where torch cannot use CUDA (a CPU-only torch wheel, a torch built
for a newer CUDA than the node's driver, no driver) would otherwise train on the CPU, hours slower, and look
fine. `trial_device` stops it instead, with one line naming the node, torch's CUDA version and the driver's.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence

import torch


class CudaUnusable(RuntimeError):
    """A trial was given a GPU on a node where torch cannot use CUDA."""


def driver_version() -> str | None:
    """The NVIDIA driver version of this machine (nvidia-smi, else /proc/driver/nvidia/version), or None."""
    try:
        run = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=False)
        if run.returncode == 0 and run.stdout.strip():
            return run.stdout.split()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        with open("/proc/driver/nvidia/version") as stream:
            words = stream.readline().split()
    except OSError:
        return None
    numbers = [w for w in words if w[:1].isdigit() and "." in w]
    return numbers[0] if numbers else None


def node_address() -> str:
    """This node's address as Ray names it (or the host name outside Ray)."""
    try:
        import ray

        return ray.util.get_node_ip_address()
    except Exception:
        import socket

        return socket.gethostname()


def trial_device(gpu_ids: Sequence[object] | None = None,
                 cuda_available: Callable[[], bool] = torch.cuda.is_available,
                 torch_cuda: str | None | object = ...,
                 driver: Callable[[], str | None] = driver_version,
                 node: Callable[[], str] = node_address) -> torch.device:
    """cuda when Ray gave this trial a GPU (`gpu_ids`, default `ray.get_gpu_ids()`), cpu when it gave none.
    Raises CudaUnusable (one line: node, torch's CUDA version, the driver's) when a GPU was given and torch
    cannot use it. The detection is injectable (tests run it on CPU-only machines)."""
    if gpu_ids is None:
        import ray

        gpu_ids = ray.get_gpu_ids()
    if not gpu_ids:
        return torch.device("cpu")
    if cuda_available():
        return torch.device("cuda")
    built = torch.version.cuda if torch_cuda is ... else torch_cuda
    found = driver()
    raise CudaUnusable(
        f"node {node()}: this trial was given GPU {', '.join(map(str, gpu_ids))} but torch {torch.__version__} "
        f"cannot use CUDA there (torch built for CUDA {built or 'none: a CPU-only build'}, NVIDIA driver "
        f"{found or 'not found'}); install a torch build for that driver on the node (cluster/aws.yaml pins "
        f"it), or run with --gpus-per-trial 0")


__all__ = ["CudaUnusable", "trial_device", "driver_version"]
