"""A real two-node Ray: head and worker in their own network and mount namespaces (nothing shared but the private
link), an S3 API server on a host of its own beside them; jobs submitted the way `--cluster` submits them.

One cluster (with its dashboard, for Ray Jobs) serves the tests of this module; the fixture checks at the end
that teardown left no namespace behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from jobs import output, submit

from namespaced_cluster import ClusterHandle, multinode_cluster, namespaces_available, private_network, s3_host

TINY_STUDY = Path(__file__).with_name("tiny_study.py")
BUCKET = "dsr-multinode"
CONNECT = "import os; from studies.runner.runtime import connect; connect(os.environ['RAY_ADDRESS'])"
SEES = """
import json, os, ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
ray.init()
@ray.remote(num_cpus=0)
def look(path):
    import dsr
    return {"ip": ray.util.get_node_ip_address(), "checkout": os.path.exists(os.environ["CHECKOUT"] + "/dsr"),
            "dsr": dsr.__file__, "seen": os.path.exists(path)}
open("/tmp/home/written-on-head", "w").write("x")
nodes = [n for n in ray.nodes() if n["Alive"]]
print(json.dumps([ray.get(look.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                          .remote("/tmp/home/written-on-head")) for n in nodes]))
"""
SHARED_CHECK = """
import ray, sys
from studies.runner.storage import require_shared_storage
ray.init()
require_shared_storage(sys.argv[1])
print("accepted", sys.argv[1])
"""

_ok, _reason = namespaces_available()
pytestmark = pytest.mark.skipif(not _ok, reason=f"namespaces cannot be created here: {_reason}")


def _namespaces() -> set[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in listing.splitlines() if line.strip()}


def _last_json(stdout: str, key: str) -> dict | list:
    lines = [line for line in stdout.splitlines() if line.startswith(("{", "[")) and key in line]
    assert lines, stdout[-3000:]
    return json.loads(lines[-1])


@pytest.fixture(scope="module")
def s3_and_cluster():
    with private_network() as network, s3_host(network) as s3:
        with multinode_cluster(num_workers=1, cpus_per_node=1, include_dashboard=True, network=network,
                               env=s3.env) as handle:
            ours = {name for name in _namespaces() if name.startswith(network.tag)}
            assert len(ours) == 4  # head, worker, the S3 host and the switch between them
            created = handle.run_client([sys.executable, "-c", f"import boto3; boto3.client('s3').create_bucket("
                                         f"Bucket='{BUCKET}')"], env=s3.env, timeout=60)
            assert created.returncode == 0, created.stderr[-2000:]
            yield s3, handle
    # Teardown removed the namespaces (and with them every process that lived in them).
    assert not ours & _namespaces()


@pytest.fixture(scope="module")
def ray_cluster(s3_and_cluster) -> ClusterHandle:
    return s3_and_cluster[1]


@pytest.mark.slow  # a namespaced multi-node Ray: a minute or more
def test_each_node_has_its_own_filesystem_and_gets_the_code_with_the_job(ray_cluster: ClusterHandle) -> None:
    run = submit(ray_cluster, ["python", "-c", SEES], env={"CHECKOUT": str(TINY_STUDY.parents[2])})
    assert run.returncode == 0, output(run)
    seen = {node["ip"]: node for node in _last_json(run.stdout, '"ip"')}
    assert set(seen) == {ray_cluster.head_ip, *ray_cluster.worker_ips}
    assert not any(node["checkout"] for node in seen.values())  # this checkout is hidden on every node
    assert all("working_dir_files" in node["dsr"] for node in seen.values())  # dsr came with the job
    assert seen[ray_cluster.head_ip]["seen"] and not seen[ray_cluster.worker_ips[0]]["seen"]  # /tmp is private


@pytest.mark.slow  # a namespaced multi-node Ray: a minute or more
def test_tune_trials_run_on_both_nodes_with_s3_storage(s3_and_cluster, tmp_path: Path) -> None:
    s3, cluster = s3_and_cluster
    assert not cluster.head_ip.startswith("127.") and cluster.head_ip not in cluster.worker_ips
    run = submit(cluster, ["python", "tests/cluster/tiny_study.py", f"s3://{BUCKET}/tiny", "4"], env=s3.env)
    assert run.returncode == 0, output(run)
    summary = _last_json(run.stdout, '"nodes"')  # the job's output was streamed back
    assert summary["errors"] == 0
    assert len(summary["nodes"]) == 4  # every trial reported stage "done"
    assert set(summary["nodes"]) == {cluster.head_ip, *cluster.worker_ips}
    listed = cluster.run_client([sys.executable, "-c", "import boto3, sys; print(sum(1 for o in boto3.client('s3')"
                                 f".list_objects_v2(Bucket='{BUCKET}', Prefix='tiny/tiny/')['Contents'] "
                                 "if o['Key'].endswith('result.json')))"], env=s3.env, timeout=60)
    assert listed.returncode == 0 and int(listed.stdout.split()[-1]) == 4, output(listed)  # in S3, not a disk


@pytest.mark.slow  # a namespaced multi-node Ray: a minute or more
def test_node_local_storage_is_refused_and_s3_accepted(s3_and_cluster) -> None:
    s3, cluster = s3_and_cluster
    refused = submit(cluster, ["python", "-c", SHARED_CHECK, "/tmp/home/results"], env=s3.env)
    assert refused.returncode != 0
    last = [line for line in refused.stdout.splitlines() if "ValueError" in line][-1]
    assert "--storage /tmp/home/results" in last and cluster.worker_ips[0] in last and "s3://" in last
    accepted = submit(cluster, ["python", "-c", SHARED_CHECK, f"s3://{BUCKET}/exp"], env=s3.env)
    assert accepted.returncode == 0 and f"accepted s3://{BUCKET}/exp" in accepted.stdout, output(accepted)


@pytest.mark.slow  # a namespaced multi-node Ray: a minute or more
def test_client_without_the_token_is_refused_in_one_line(ray_cluster: ClusterHandle) -> None:
    # Ray itself gives up after about 20 s; connect() turns that into one line that names the token settings.
    refused = ray_cluster.run_client([sys.executable, "-c", CONNECT], env={"RAY_AUTH_TOKEN": "0" * 64},
                                     timeout=120, cwd=TINY_STUDY.parents[2])
    assert refused.returncode != 0
    last = refused.stderr.strip().splitlines()[-1]
    assert "could not join" in last and "RAY_AUTH_TOKEN" in last and ray_cluster.address in last


def test_bad_cluster_size_is_refused() -> None:
    with pytest.raises(ValueError, match="num_workers"), multinode_cluster(num_workers=0):
        pass


@pytest.mark.slow  # a namespaced multi-node Ray: a minute or more
def test_failed_start_still_removes_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    """The head starts, the worker fails: the head's processes are ended and every namespace is deleted."""
    import namespaced_cluster as local

    real_start = local._ray_start
    started: list[str] = []

    def start_head_then_fail(ray_bin, ns, args, env, timeout, *rest):
        if started:
            raise RuntimeError("worker refused (simulated)")
        real_start(ray_bin, ns, args, env, timeout, *rest)
        started.append(ns)
        assert local._netns_pids(ns), "the head's processes live in its namespace"

    monkeypatch.setattr(local, "_ray_start", start_head_then_fail)
    with pytest.raises(RuntimeError, match="simulated"), multinode_cluster(num_workers=1):
        pass
    tag = started[0].rsplit("-", 1)[0]
    assert not {name for name in _namespaces() if name.startswith(tag)}
    assert local._netns_pids(started[0]) == []
