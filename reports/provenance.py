"""The report's provenance header: which code, libraries, machines and command produced each experiment.

Studies write `provenance.json` into every experiment (`dsr.provenance`: code version and commit, library versions,
the driver's machine, the command line, the preset; and, per start or resume, the cluster's resources and the
start time). Trials add the machine they ran on to their first report. A report over experiments that ran
different code says so in its header.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from dsr.provenance import PROVENANCE_FILE


def read_provenance(experiment_dir: str | Path) -> dict[str, Any] | None:
    """The experiment's provenance.json, or None (experiments from before it was written, or unreadable)."""
    path = Path(experiment_dir) / PROVENANCE_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def code_label(code: dict[str, Any] | None) -> str:
    """E.g. "dsr-studies 0.1.0 at 1a2b3c4d (uncommitted changes)"; "unknown code" without a record."""
    if not code:
        return "unknown code"
    commit = code.get("commit")
    label = f"dsr-studies {code.get('version') or '?'}"
    if commit:
        label += f" at {commit[:8]}" + (" (uncommitted changes)" if code.get("dirty") else "")
    else:
        label += " (commit unknown)"
    return label


def provenance_lines(documents: dict[str, dict[str, Any] | None], trials: pd.DataFrame) -> list[str]:
    """Markdown lines for the report's header: per experiment its code, libraries, preset and command, the
    machines its trials ran on, and a warning when the experiments ran different code."""
    lines = ["Provenance:", ""]
    codes = set()
    for name, doc in documents.items():
        if doc is None:
            lines.append(f"- `{name}`: no provenance recorded (an experiment from before it was written)")
            continue
        run_codes = {code_label(run.get("code")) for run in doc.get("runs") or [] if run.get("code")}
        codes |= run_codes or {code_label(doc.get("code"))}
        libraries = doc.get("libraries") or {}
        library_text = ", ".join(f"{key} {value}" for key, value in libraries.items() if value)
        command = " ".join(doc.get("command") or [])
        lines.append(f"- `{name}`: {code_label(doc.get('code'))}; {library_text}; preset {doc.get('preset', '?')}; "
                     f"command `{command}`")
    machines = _machines(trials)
    if machines:
        lines.append(f"- Trials ran on: {machines}")
    if len(codes) > 1:
        lines.insert(2, f"**These experiments ran different code**: {'; '.join(sorted(codes))}.")
        lines.insert(3, "")
    return lines + [""]


def _machines(trials: pd.DataFrame) -> str:
    """'AMD EPYC (2 trials), NVIDIA H100 80GB HBM3 (4 trials)': the CPU or GPU each trial computed on."""
    if "cpu_model" not in trials.columns:
        return ""
    device = trials["gpu_model"].where(trials["gpu_model"].notna(), trials["cpu_model"]) \
        if "gpu_model" in trials.columns else trials["cpu_model"]
    counts = device.dropna().astype(str).value_counts()
    return ", ".join(f"{model} ({count} trial{'s' if count != 1 else ''})" for model, count in counts.items())
