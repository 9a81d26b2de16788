"""The real ablation study on a real two-node Ray: head and worker are separate hosts in their own network
namespaces (namespaced_cluster.multinode_cluster); the study joins with --address and its trials run on both nodes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from study_run import REPO_ROOT, error_lines, is_done, read_results

from namespaced_cluster import multinode_cluster, namespaces_available

VARIANTS = ("DSR", "DSR_U-", "DSR_random", "DSR_Limg")

_ok, _reason = namespaces_available()


def _namespaces() -> set[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in listing.splitlines() if line.strip()}


@pytest.mark.skipif(not _ok, reason=f"network namespaces cannot be created here: {_reason}")
def test_study_trials_run_on_both_nodes(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    with multinode_cluster(num_workers=1, cpus_per_node=1) as cluster:
        tag = cluster.head_namespace.rsplit("-", 1)[0]
        ours = {name for name in _namespaces() if name.startswith(tag)}
        assert len(ours) == 3  # head, worker and the switch joining them
        assert not cluster.head_ip.startswith("127.") and cluster.head_ip not in cluster.worker_ips
        run = cluster.run_in_head([sys.executable, "studies/ablation.py", "--address", cluster.address,
                                   "--preset", "tiny", "--variants", *VARIANTS, "--storage", str(storage),
                                   "--no-report"], cwd=REPO_ROOT, timeout=300)
        output = f"--- stdout\n{run.stdout[-3000:]}\n--- stderr\n{run.stderr[-3000:]}"
        assert run.returncode == 0, output
        assert error_lines(run.stderr) == [], output
    assert not ours & _namespaces(), "the test cluster's namespaces were left behind"

    trials = read_results(storage / "ablation")
    assert len(trials) == len(VARIANTS)
    assert all(is_done(rows) for rows in trials.values()), {name: rows[-1:] for name, rows in trials.items()}
    assert sorted(rows[-1]["variant"] for rows in trials.values()) == sorted(VARIANTS)
    nodes = {r["node_ip"] for rows in trials.values() for r in rows}
    assert nodes == {cluster.head_ip, *cluster.worker_ips}
    # Both nodes shared one stage-1 model through the storage: one trial trained it, none trained it again.
    owners = [name for name, rows in trials.items() if any(r.get("stage1_source") == "trained" for r in rows)]
    assert len(owners) == 1
    assert len(list((storage / "ablation" / "stage1_cache").glob("*/latent.pt"))) == 1
