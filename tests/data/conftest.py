"""Fixtures of the data tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_helpers import make_category


@pytest.fixture
def mvtec_root(tmp_path: Path) -> Path:
    """Two MVTec-layout categories: bottle (3 train, 2 good + 2 scratch test), carpet (2 train, 1 good + 3 test)."""
    root = tmp_path / "mvtec"
    make_category(root / "bottle")
    make_category(root / "carpet", train=2, good=1, defects={"cut": 1, "hole": 2})
    return root
