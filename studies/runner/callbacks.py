"""The Tune callbacks every Tune run of a study gets (the stage-1 phase and the main trials alike)."""

from __future__ import annotations

import argparse

from ray import tune

from studies.runner.placement import placement_callbacks
from studies.runner.spot import DriverLogToStorage, NodeLossNotCounted


def run_callbacks(args: argparse.Namespace) -> list[tune.Callback]:
    """Fail fast on unplaceable trials (--placement-timeout), a lost node not counted as the trial's failure, the
    driver's log copied to the experiment's storage."""
    return [*placement_callbacks(args), NodeLossNotCounted(), DriverLogToStorage()]


__all__ = ["run_callbacks"]
