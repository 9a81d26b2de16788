"""Fixtures of the study-harness tests: start real study scripts, and end everything they started by pid."""

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
