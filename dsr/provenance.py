"""Where a result came from: the code's version, the libraries, and the machine that computed it.

A table is only as trustworthy as what produced it. `code_version` names the project's version and git commit (and
whether the tree had uncommitted changes); `library_versions` the libraries that change numbers; `node_hardware`
the CPU and GPU a process runs on. Studies save these with every experiment and trial, and reports print them.

On a cluster the code arrives as a Ray job's working_dir, without its `.git`: the launcher passes the commit in the
environment (`DSR_CODE_COMMIT`, `DSR_CODE_DIRTY`), and `code_version` prefers those.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parents[1]
DISTRIBUTION = "dsr-studies"
COMMIT_ENV, DIRTY_ENV = "DSR_CODE_COMMIT", "DSR_CODE_DIRTY"
PROVENANCE_FILE = "provenance.json"  # an experiment's record of these (studies write it, reports read it)
LIBRARIES = ("torch", "torchvision", "numpy", "scikit-learn", "ray", "optuna")


def _git(*args: str, cwd: Path = PROJECT_DIR) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_version(project_dir: Path = PROJECT_DIR) -> dict[str, Any]:
    """{"version", "commit", "dirty"}: commit None where neither git nor the environment knows it."""
    try:
        version = metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        version = None
    if os.environ.get(COMMIT_ENV):
        return {"version": version, "commit": os.environ[COMMIT_ENV],
                "dirty": os.environ.get(DIRTY_ENV, "").lower() in ("1", "true", "yes")}
    if not (project_dir / ".git").exists():
        return {"version": version, "commit": None, "dirty": None}
    commit = _git("rev-parse", "HEAD", cwd=project_dir)
    status = _git("status", "--porcelain", cwd=project_dir)  # untracked files count: a new module changes results
    return {"version": version, "commit": commit, "dirty": None if status is None else bool(status)}


def code_environment(project_dir: Path = PROJECT_DIR) -> dict[str, str]:
    """The variables that carry `code_version` to processes that run without the checkout (Ray job nodes)."""
    version = code_version(project_dir)
    if version["commit"] is None:
        return {}
    return {COMMIT_ENV: version["commit"], DIRTY_ENV: "1" if version["dirty"] else "0"}


def library_versions() -> dict[str, str | None]:
    """Python and the installed versions of the libraries that change results (None: not installed); CUDA as
    torch was built for it (None: a CPU build). Read from package metadata: nothing is imported but torch."""
    import torch

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["cuda"] = torch.version.cuda
    return versions


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo; elsewhere what `platform` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def node_hardware(device: str | None = None) -> dict[str, Any]:
    """This process's machine: host name, CPU model and logical cores, and the GPU it uses (None on the CPU)."""
    import torch

    gpu = None
    if device is not None and str(device).startswith("cuda") and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(torch.device(device))
    return {"host": platform.node(), "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "gpu_model": gpu}


def provenance(command: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    """Everything above in one JSON-ready document, with the command line (default: this process's)."""
    return {"code": code_version(), "libraries": library_versions(), "driver": node_hardware(),
            "command": list(sys.argv if command is None else command), **extra}
