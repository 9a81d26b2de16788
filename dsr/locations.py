"""Plain paths and URIs: the one test every layer uses to tell a local folder from cloud storage."""

from __future__ import annotations

import re
from pathlib import Path

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


def is_uri(location: str | Path) -> bool:
    """True for "scheme://..." (s3://bucket/prefix, gs://..., file:///...); False for a plain path."""
    return bool(_SCHEME.match(str(location)))


def is_remote(location: str | Path) -> bool:
    """True for a URI whose files are not on this machine's filesystem (anything but a plain path or file://)."""
    return is_uri(location) and not str(location).lower().startswith("file://")
