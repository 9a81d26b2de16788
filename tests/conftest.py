"""Shared test set-up: deterministic, single-threaded torch so tests are reproducible and light on 2 cores."""

import os

import pytest
import torch

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # a local Ray stays on 127.0.0.1

REFERENCE_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "reference")


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    torch.manual_seed(0)
