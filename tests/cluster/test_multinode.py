"""A real two-node Ray: head and worker in their own network namespaces, tiny Tune studies spread across both.

One cluster (with its dashboard, for Ray Jobs) serves the tests of this module; the fixture checks at the end
that teardown left no namespace behind.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from namespaced_cluster import ClusterHandle, multinode_cluster, namespaces_available

TINY_STUDY = Path(__file__).with_name("tiny_study.py")
CONNECT = "import os; from studies.runner.runtime import connect; connect(os.environ['RAY_ADDRESS'])"

_ok, _reason = namespaces_available()
pytestmark = pytest.mark.skipif(not _ok, reason=f"network namespaces cannot be created here: {_reason}")


def _namespaces() -> set[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in listing.splitlines() if line.strip()}


def _summary(stdout: str) -> dict:
    """The JSON line tiny_study.py prints last."""
    lines = [line for line in stdout.splitlines() if line.startswith('{"nodes"')]
    assert lines, stdout[-3000:]
    return json.loads(lines[-1])


@pytest.fixture(scope="module")
def ray_cluster():
    with multinode_cluster(num_workers=1, cpus_per_node=1, include_dashboard=True) as handle:
        tag = handle.head_namespace.rsplit("-", 1)[0]
        ours = {name for name in _namespaces() if name.startswith(tag)}
        assert len(ours) == 3  # head, worker and the switch between them
        yield handle
    # Teardown removed the namespaces (and with them every process that lived in them).
    assert not ours & _namespaces()


def test_tune_trials_run_on_both_nodes(ray_cluster: ClusterHandle, tmp_path: Path) -> None:
    assert not ray_cluster.head_ip.startswith("127.") and ray_cluster.head_ip not in ray_cluster.worker_ips
    run = ray_cluster.run_in_head([sys.executable, str(TINY_STUDY), str(tmp_path / "results"), "4"], timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = _summary(run.stdout)
    assert summary["errors"] == 0
    assert len(summary["nodes"]) == 4  # every trial reported stage "done"
    assert set(summary["nodes"]) == {ray_cluster.head_ip, *ray_cluster.worker_ips}


def test_ray_job_submit_step_runs_the_study_on_the_cluster(ray_cluster: ClusterHandle, tmp_path: Path) -> None:
    """The submit step of --cluster (JobSubmissionClient with the project as working_dir, its logs followed),
    pointed at this cluster's dashboard instead of a tunnel."""
    storage = str(tmp_path / "job-results")
    entrypoint = ["python", str(TINY_STUDY.relative_to(TINY_STUDY.parents[2])), storage, "2"]
    code = (f"import sys; from studies.runner.launch import submit_and_follow; "
            f"from studies.runner.runtime import project_runtime_env; "
            f"sys.exit(submit_and_follow({ray_cluster.dashboard_url!r}, {entrypoint!r}, project_runtime_env(), "
            f"'dsr-multinode-test'))")
    run = ray_cluster.run_python_in_head(code, timeout=300)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    summary = _summary(run.stdout)  # the job's output was streamed back
    assert summary["errors"] == 0 and len(summary["nodes"]) == 2
    assert (Path(storage) / "tiny").is_dir()


def test_client_without_the_token_is_refused_in_one_line(ray_cluster: ClusterHandle) -> None:
    # Ray itself gives up after about 20 s; connect() turns that into one line that names the token settings.
    refused = ray_cluster.run_python_in_head(CONNECT, env={"RAY_AUTH_TOKEN": "0" * 64}, timeout=120)
    assert refused.returncode != 0
    last = refused.stderr.strip().splitlines()[-1]
    assert "could not join" in last and "RAY_AUTH_TOKEN" in last and ray_cluster.address in last


def test_bad_cluster_size_is_refused() -> None:
    with pytest.raises(ValueError, match="num_workers"), multinode_cluster(num_workers=0):
        pass


def test_failed_start_still_removes_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    """The head starts, the worker fails: the head's processes are ended and every namespace is deleted."""
    import namespaced_cluster as local

    real_start = local._ray_start
    started: list[str] = []

    def start_head_then_fail(ray_bin, ns, args, env, timeout):
        if started:
            raise RuntimeError("worker refused (simulated)")
        real_start(ray_bin, ns, args, env, timeout)
        started.append(ns)
        assert local._netns_pids(ns), "the head's processes live in its namespace"

    monkeypatch.setattr(local, "_ray_start", start_head_then_fail)
    with pytest.raises(RuntimeError, match="simulated"), multinode_cluster(num_workers=1):
        pass
    tag = started[0].rsplit("-", 1)[0]
    assert not {name for name in _namespaces() if name.startswith(tag)}
    assert local._netns_pids(started[0]) == []
