"""A real two-node Ray: head and worker in their own network namespaces, a tiny Tune study spread across both."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.local import ClusterHandle, multinode_cluster, namespaces_available

TINY_STUDY = Path(__file__).with_name("tiny_study.py")
CONNECT = "import os; from studies.ray_runtime import connect; connect(os.environ['RAY_ADDRESS'])"

_ok, _reason = namespaces_available()
pytestmark = pytest.mark.skipif(not _ok, reason=f"network namespaces cannot be created here: {_reason}")


def _namespaces() -> set[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in listing.splitlines() if line.strip()}


def test_tune_trials_run_on_both_nodes(tmp_path: Path) -> None:
    with multinode_cluster(num_workers=1, cpus_per_node=1) as cluster:
        assert isinstance(cluster, ClusterHandle)
        assert not cluster.head_ip.startswith("127.") and cluster.head_ip not in cluster.worker_ips
        ours = {name for name in _namespaces() if name.startswith(cluster.head_namespace.rsplit("-", 1)[0])}
        assert len(ours) == 3  # head, worker and the switch between them
        run = cluster.run_in_head([sys.executable, str(TINY_STUDY), str(tmp_path / "results"), "4"], timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        summary = json.loads(run.stdout.strip().splitlines()[-1])
        # A client without the cluster's token is refused, with a one-line hint (Ray itself gives up after ~20 s).
        refused = cluster.run_python_in_head(CONNECT, env={"RAY_AUTH_TOKEN": "0" * 64}, timeout=120)
        assert refused.returncode != 0
        assert "could not join" in refused.stderr and "RAY_AUTH_TOKEN" in refused.stderr.strip().splitlines()[-1]

    assert summary["errors"] == 0
    assert len(summary["nodes"]) == 4  # every trial reported stage "done"
    assert set(summary["nodes"]) == {cluster.head_ip, *cluster.worker_ips}
    # Teardown removed the namespaces (and with them every process that lived in them).
    assert not ours & _namespaces()


def test_bad_cluster_size_is_refused() -> None:
    with pytest.raises(ValueError, match="num_workers"):
        with multinode_cluster(num_workers=0):
            pass


def test_failed_start_still_removes_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    """The head starts, the worker fails: the head's processes are ended and every namespace is deleted."""
    import cluster.local as local

    real_start = local._ray_start
    started: list[str] = []

    def start_head_then_fail(ray_bin, ns, args, env, timeout):
        if started:
            raise RuntimeError("worker refused (simulated)")
        real_start(ray_bin, ns, args, env, timeout)
        started.append(ns)
        assert local._netns_pids(ns), "the head's processes live in its namespace"

    monkeypatch.setattr(local, "_ray_start", start_head_then_fail)
    with pytest.raises(RuntimeError, match="simulated"):
        with multinode_cluster(num_workers=1):
            pass
    tag = started[0].rsplit("-", 1)[0]
    assert not {name for name in _namespaces() if name.startswith(tag)}
    assert local._netns_pids(started[0]) == []
