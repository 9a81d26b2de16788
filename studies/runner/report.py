"""The report a study builds at its end (`python -m reports` does the same any time later)."""

from __future__ import annotations

import sys


def build_study_report(experiment: str) -> None:
    """Build the experiment's report; a report problem is printed, never raised: it must not hide the study's own
    outcome (its exit code says whether the trials succeeded)."""
    try:
        from reports import build_report

        out = build_report(experiment)
        print(f"report: {out}", flush=True)
    except Exception as error:
        print(f"report not built: {error}", file=sys.stderr)


__all__ = ["build_study_report"]
