"""The offline demo dataset kinds and the difficulty each builds (shared by `dsr.data.build` and `dsr.data.demo`)."""

from __future__ import annotations

DEMO_KINDS: dict[str, str] = {"demo": "easy", "demo_hard": "hard"}  # dataset kind -> dsr.data.demo difficulty


def is_demo_kind(kind: str | None) -> bool:
    """Whether `kind` is one of the demos this project builds offline (built where missing, stage-1 photos)."""
    return kind in DEMO_KINDS


__all__ = ["DEMO_KINDS", "is_demo_kind"]
