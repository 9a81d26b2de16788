"""A trial given a GPU never trains on the CPU in silence: where CUDA is unusable it stops in one line naming the
node, torch's CUDA version and the driver's (the GPU detection injected, so this runs on CPU-only machines)."""

from __future__ import annotations

import pytest
import torch

from studies.runner.devices import CudaUnusable, driver_version, trial_device


def test_no_gpu_given_trains_on_the_cpu() -> None:
    assert trial_device(gpu_ids=[], cuda_available=lambda: True) == torch.device("cpu")


def test_a_gpu_given_where_cuda_works_trains_on_it() -> None:
    assert trial_device(gpu_ids=[0], cuda_available=lambda: True) == torch.device("cuda")


@pytest.mark.parametrize("built, driver, words", [
    ("12.8", "535.104.05", ["CUDA 12.8", "driver 535.104.05"]),  # a wheel newer than the node's driver
    (None, "550.54.15", ["CPU-only build", "driver 550.54.15"]),  # a CPU-only wheel on a GPU node
    ("12.8", None, ["CUDA 12.8", "driver not found"]),  # no driver at all
])
def test_a_gpu_given_where_cuda_is_unusable_stops_in_one_line(built, driver, words) -> None:
    with pytest.raises(CudaUnusable) as info:
        trial_device(gpu_ids=["0"], cuda_available=lambda: False, torch_cuda=built, driver=lambda: driver,
                     node=lambda: "10.0.3.7")
    message = str(info.value)
    assert "\n" not in message and "node 10.0.3.7" in message and "GPU 0" in message and torch.__version__ in message
    assert all(word in message for word in words), message
    assert "--gpus-per-trial 0" in message


def test_the_driver_version_is_read_or_none_here() -> None:
    found = driver_version()
    assert found is None or found[0].isdigit()
