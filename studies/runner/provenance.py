"""An experiment's provenance.json: what code, libraries, machine and command ran it, one entry per start.

Written by the driver once Ray is up (a new experiment and every --resume add a run), read by `reports`. The
fields come from `dsr.provenance`; a run adds its start time and the cluster's resources, which the report's
cost section needs for the idle share.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from dsr.provenance import PROVENANCE_FILE, provenance
from studies.runner.storage import storage_filesystem


def record_run(experiment_dir: str, args: argparse.Namespace, argv: list[str], study: str,
               cluster_resources: dict[str, float]) -> dict[str, Any]:
    """Add this start (or resume) to `<experiment_dir>/provenance.json`; returns the whole document."""
    filesystem, path = storage_filesystem(f"{experiment_dir.rstrip('/')}/{PROVENANCE_FILE}")
    document: dict[str, Any] = {}
    if filesystem.get_file_info(path).type.name == "File":
        with filesystem.open_input_stream(path) as stream:
            document = json.loads(stream.read().decode())
    current = provenance([f"studies/{study}.py", *argv], study=study, preset=args.preset)
    run = {"started": time.time(), "resumed": bool(args.resume), "cluster_resources": dict(cluster_resources),
           "code": current["code"], "command": current["command"]}
    document = {**current, **{k: v for k, v in document.items() if k != "runs"},
                "runs": [*document.get("runs", []), run]}
    filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with filesystem.open_output_stream(path) as stream:
        stream.write(json.dumps(document, indent=1, default=str).encode())
    return document
