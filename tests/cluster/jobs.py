"""Submit Ray jobs to a namespaced test cluster the way `--cluster` does: from a client beside the cluster (the
head's network namespace, this machine's filesystem), the project shipped as the job's working_dir."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from namespaced_cluster import REPO_ROOT, ClusterHandle

_SUBMIT = """
import json, sys
from studies.runner.launch import submit_and_follow
from studies.runner.runtime import project_runtime_env
address, entrypoint, submission_id, extra_env = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
runtime_env = project_runtime_env()
runtime_env["env_vars"].update(extra_env)
sys.exit(submit_and_follow(address, entrypoint, runtime_env, submission_id))
"""


def submit_argv(cluster: ClusterHandle, entrypoint: Sequence[str], env: Mapping[str, str] | None = None,
                submission_id: str | None = None) -> list[str]:
    """The client command that submits `entrypoint` as a job to `cluster` and follows it to its end."""
    assert cluster.dashboard_url, "the cluster was started without its dashboard (include_dashboard=True)"
    return [sys.executable, "-c", _SUBMIT, cluster.dashboard_url, json.dumps(list(entrypoint)),
            submission_id or f"dsr-test-{secrets.token_hex(4)}", json.dumps(dict(env or {}))]


def submit(cluster: ClusterHandle, entrypoint: Sequence[str], env: Mapping[str, str] | None = None,
           timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    """Submit and follow a job; its output comes back in stdout (exit 0 when the job succeeded)."""
    return cluster.run_client(submit_argv(cluster, entrypoint, env), timeout=timeout, cwd=REPO_ROOT)


def output(run: subprocess.CompletedProcess[str] | Any, chars: int = 4000) -> str:
    return f"--- stdout\n{run.stdout[-chars:]}\n--- stderr\n{run.stderr[-chars:]}"
