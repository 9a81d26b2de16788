"""Fixtures of the study-harness tests: start real study scripts (ended by pid), and the inputs several tests share
(built once: the demo data, a folder of bad inputs)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

HERE = str(Path(__file__).resolve().parent)
REPO_ROOT = str(Path(__file__).resolve().parents[2])
for folder in (REPO_ROOT, HERE):
    if folder not in sys.path:
        sys.path.insert(0, folder)

from study_run import StudyRun

BROKEN_YAML = "cluster_name: [unclosed\n  head: 1\n"
INVALID_CLUSTER = "cluster_name: bad\nmax_workers: many\nprovider:\n  type: aws\n  region: us-west-2\n"


@pytest.fixture
def start_study(tmp_path: Path) -> Iterator[Callable[..., StudyRun]]:
    """`start_study("ablation", [args...])` starts a study; every run is ended (by pid) when the test ends."""
    runs: list[StudyRun] = []

    def start(study: str, args: Sequence[str], env: dict[str, str] | None = None) -> StudyRun:
        run = StudyRun(study, args, tmp_path / "logs", env)
        runs.append(run)
        return run

    try:
        yield start
    finally:
        for run in runs:
            run.end()


@pytest.fixture(scope="session")
def demo_data() -> Path:
    """The demo dataset where a study without --data finds it (data/demo), built once per session."""
    from dsr.data import build_demo
    from studies.runner.data_checks import DEFAULT_DEMO_ROOT

    build_demo(DEFAULT_DEMO_ROOT)
    return DEFAULT_DEMO_ROOT


@pytest.fixture(scope="session")
def bad_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of bad inputs, read-only for the tests: broken.yaml (not YAML), invalid.yaml (fails Ray's cluster
    validation), parts/ (a folder dataset whose train/good holds a PNG cut off after its header), k16.pt (a
    stage-1 model of the tiny preset's widths but K = 16 codes; the tiny preset has 32)."""
    import numpy as np
    import torch
    from PIL import Image

    from dsr.config import preset
    from dsr.model import DSR

    root = tmp_path_factory.mktemp("bad_inputs")
    (root / "broken.yaml").write_text(BROKEN_YAML)
    (root / "invalid.yaml").write_text(INVALID_CLUSTER)
    parts = root / "parts"
    for name in ("train/good/0.png", "train/good/1.png", "test/good/0.png", "test/bad/0.png"):
        (parts / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((16, 16, 3), 120, np.uint8)).save(parts / name)
    (parts / "train/good/broken.png").write_bytes((parts / "train/good/0.png").read_bytes()[:60])
    torch.save(DSR(preset("tiny").replace(codebook_size=16)).latent.state_dict(), root / "k16.pt")
    return root
