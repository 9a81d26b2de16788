"""The whole `--cluster` path, run for real against SSH hosts with a cluster file made from cluster/onprem.yaml.

Two hosts (tests/ssh_hosts.py: each its own network, mount and PID namespace running Debian's sshd; the SSH user
is root) and a laptop beside them on a private network, with an S3 API server (moto) on a host of its own. From
the laptop, `python studies/ablation.py --cluster FILE ...` runs as a user would run it, nothing of the launcher
replaced: Ray's `ray up` logs into the head over SSH, copies the file_mounts (the dependency list, the Ray auth
token), runs the file's setup and start commands; the head's autoscaler does the same for the worker host; then
the dashboard tunnel (`ray dashboard`, SSH), the job with the checkout as its working_dir (the hosts do not see
this checkout), the log tail, the report in `s3://`, and, on the second run, `--down`.

Run 1 is the default study (demo data, built on the nodes) on the tiny preset; run 2 reuses the running cluster
for the ablation on a tiny MVTec tree in S3 (`--dataset mvtec --data s3://...`) and tears the cluster down. Each
node fits one trial at a time (`--cpus-per-trial` = the CPUs Ray finds on a node), so both nodes get trials,
which the results in S3 must show (the node address of every trial).

The generated cluster file is cluster/onprem.yaml with the hosts, the SSH user and key filled in, and one change
to its setup commands (the test network reaches no package index): `TEST_VENV`, the virtualenv this test runs
in (visible on every host at its own path), is linked as each host's ~/venv instead of creating one and
pip-installing the dependencies; the other setup commands (the ~/.bashrc line, the requirements list, the token's
mode) and every start command run as written.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from namespaced_cluster import namespaces_available, private_network, s3_host
from ssh_hosts import SSH_USER, SSHHosts, ssh_hosts, ssh_hosts_available

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from data_helpers import make_category  # noqa: E402

from studies.runner.runtime import PROJECT_DIR  # noqa: E402

ONPREM = PROJECT_DIR / "cluster" / "onprem.yaml"
# The generated file's virtualenv: linked as ~/venv on every host in place of the file's install commands.
TEST_VENV = sys.prefix
BUCKET = "dsr-ssh"
CATEGORIES = ("bottle", "carpet")
RUN_LIMIT_S = 900  # ends a hung run only: one run takes 2 to 4.5 minutes on a loaded 2-core machine
READ_RESULTS = """
import json, sys, boto3
bucket, prefix = sys.argv[1], sys.argv[2]
s3, found = boto3.client("s3"), {}
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
    for item in page.get("Contents", []):
        parts = item["Key"][len(prefix):].split("/")
        if len(parts) == 2 and parts[1] == "result.json":
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read().decode()
            found[parts[0]] = [json.loads(line) for line in body.splitlines() if line.strip()]
print(json.dumps(found))
"""
UPLOAD = """
import sys, boto3
from pathlib import Path
s3, folder = boto3.client("s3"), Path(sys.argv[1])
files = sorted(p for p in folder.rglob("*") if p.is_file())
if not files:  # e.g. a folder under this machine's /tmp, which the client does not see
    sys.exit(f"nothing to upload under {folder}")
s3.create_bucket(Bucket=sys.argv[2])
for path in files:
    s3.upload_file(str(path), sys.argv[2], f"{sys.argv[3]}/{path.relative_to(folder).as_posix()}")
"""

_ok, _reason = namespaces_available()  # root, iproute2, util-linux
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


def cluster_file(hosts: SSHHosts, name: str) -> dict:
    """cluster/onprem.yaml for the test hosts: hosts, user and key filled in; ~/venv linked to TEST_VENV instead
    of installed (the only change to its commands)."""
    config = yaml.safe_load(ONPREM.read_text())
    config["cluster_name"] = name
    config["provider"].update(head_ip=hosts.addresses[0], worker_ips=list(hosts.addresses[1:]))
    config["auth"] = {"ssh_user": SSH_USER, "ssh_private_key": hosts.private_key}
    installs = [c for c in config["setup_commands"] if "apt-get" in c or "pip install" in c or " -m venv " in c]
    assert len(installs) == 5, installs  # the file's install steps, as this test knows them
    kept = [c for c in config["setup_commands"] if c not in installs]
    config["setup_commands"] = [f"ln -sfn {TEST_VENV} ~/venv", *kept]
    return config


def _write_cluster_file(hosts: SSHHosts, config: dict) -> str:
    path = hosts.client_tmp / "cluster.yaml"
    header = (f"# cluster/onprem.yaml for the SSH test hosts (tests/cluster/test_ssh_launch.py). TEST_VENV = "
              f"{TEST_VENV}:\n# linked as ~/venv on every host in place of the file's install commands.\n")
    path.write_text(header + yaml.safe_dump(config, sort_keys=False))
    return hosts.client_path(path)


def _run(hosts: SSHHosts, argv: list[str], log: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run a study command on the laptop to its end; (exit code, its output)."""
    with open(log, "w") as out:
        proc = hosts.popen_client([sys.executable, *argv], stdout=out, env=env)
        try:
            code = proc.wait(timeout=RUN_LIMIT_S)
        except subprocess.TimeoutExpired:  # its whole session (the launcher, its tunnel); the hosts end later
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise AssertionError(f"{argv[:3]} did not end within {RUN_LIMIT_S} s:\n{log.read_text()[-5000:]}")
    return code, log.read_text()


def _results(hosts: SSHHosts, env: dict[str, str], prefix: str) -> dict[str, list[dict]]:
    """Every trial's rows in S3 under s3://BUCKET/prefix, by trial folder (the stage-1 phase left out)."""
    run = hosts.run_client([sys.executable, "-c", READ_RESULTS, BUCKET, prefix], env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    return {name: rows for name, rows in found.items() if name != "stage1"}


def _check_trials(trials: dict[str, list[dict]], count: int, hosts: SSHHosts, log: str) -> None:
    assert len(trials) == count, (sorted(trials), log[-3000:])
    assert all(rows and rows[-1].get("stage") == "done" for rows in trials.values()), log[-3000:]
    nodes = {rows[-1]["node_ip"] for rows in trials.values()}
    assert nodes == set(hosts.addresses), nodes  # trials ran on both hosts


def _ray_processes(hosts: SSHHosts, host: int) -> list[str]:
    names = ("gcs_server", "raylet", "dashboard", "default_worker", "log_monitor", "monitor.py")
    return [cmd for cmd in hosts.processes(host) if any(name in cmd for name in names)]


def _raylet_env(hosts: SSHHosts, host: int) -> dict[str, str]:
    """The environment of the raylet on host `host` (it must be running)."""
    import psutil

    from namespaced_cluster import _netns_pids

    for pid in _netns_pids(hosts.namespaces[host]):
        try:
            if psutil.Process(pid).name() == "raylet":
                return psutil.Process(pid).environ()
        except psutil.Error:
            continue
    raise AssertionError(f"no raylet on host {host}: {hosts.processes(host)}")


@pytest.mark.skipif(not _ok, reason=f"SSH test hosts need network namespaces: {_reason}")
def test_cluster_launch_over_ssh_runs_both_studies_on_both_hosts_then_tears_down(tmp_path: Path) -> None:
    import ray._private.utils

    ready, missing = ssh_hosts_available()
    if not ready:  # root, yet no sshd: an install step was skipped, which must not pass unnoticed
        pytest.fail(missing)

    cpus = int(ray._private.utils.get_num_cpus())  # what `ray start` finds on each host: one trial per node
    (tmp_path / "hosts").mkdir()
    with private_network() as network, s3_host(network) as s3:
        env = {**s3.env, "PYTHONPATH": str(PROJECT_DIR)}
        with ssh_hosts(network, 2, tmp_path / "hosts", env=s3.env) as hosts:
            parts = hosts.client_tmp / "mvtec"  # the client's /tmp is its own: tmp_path may lie under ours
            for category in CATEGORIES:
                make_category(parts / category)
            uploaded = hosts.run_client([sys.executable, "-c", UPLOAD, hosts.client_path(parts), BUCKET, "mvtec"],
                                        env=env, timeout=120)
            assert uploaded.returncode == 0, uploaded.stderr[-3000:]
            config = cluster_file(hosts, f"dsr-test-{secrets.token_hex(3)}")
            path = _write_cluster_file(hosts, config)
            common = ["--cluster", path, "--preset", "tiny", "--cpus-per-trial", str(cpus)]

            # Run 1: the default study (demo data) on a fresh cluster, left running.
            start = time.monotonic()
            code, log = _run(hosts, ["studies/ablation.py", *common, "--storage", f"s3://{BUCKET}/demo",
                                     "--variants", "DSR", "DSR_U-"], tmp_path / "run1.log", env)
            first_s = time.monotonic() - start
            assert code == 0, log[-6000:]
            assert "cluster: starting or reusing" in log and "all 2 nodes have joined" in log
            assert "Uploading package gcs://" in log  # the checkout, as the job's working_dir
            assert "report: " in log and f"ray down -y {path}" in log  # no --down: how to tear down is said
            _check_trials(_results(hosts, env, "demo/ablation/"), 2, hosts, log)
            report = hosts.run_client([sys.executable, "-m", "reports", f"s3://{BUCKET}/demo/ablation", "--out",
                                       "/tmp/report-demo"], env=env, timeout=300)
            assert report.returncode == 0, report.stderr[-3000:]
            text = (hosts.client_tmp / "report-demo" / "report.md").read_text()
            assert "DSR_U-" in text
            for host in range(2):  # Ray on each host, started by the file's commands with token authentication
                assert _raylet_env(hosts, host).get("RAY_AUTH_MODE") == "token"
            assert (hosts.client_tmp / "home" / ".ray" / "auth_token").is_file()

            # Run 2: the ablation on MVTec from S3, on the running cluster; then --down.
            start = time.monotonic()
            code, log2 = _run(hosts, ["studies/ablation.py", *common, "--storage", f"s3://{BUCKET}/mvtec-out",
                                      "--dataset", "mvtec", "--data", f"s3://{BUCKET}/mvtec", "--categories",
                                      *CATEGORIES, "--variants", "DSR", "--no-report", "--down"],
                            tmp_path / "run2.log", env)  # the report from s3:// is run 1's
            second_s = time.monotonic() - start
            assert code == 0, log2[-6000:]
            _check_trials(_results(hosts, env, "mvtec-out/ablation/"), 2, hosts, log2)
            assert "cluster: tearing down" in log2 and "cluster: Ray stopped on 2 hosts" in log2
            for host in range(2):  # `ray down` ended Ray on every host
                assert not _ray_processes(hosts, host), _ray_processes(hosts, host)
    print(f"run 1: {first_s:.0f} s, run 2: {second_s:.0f} s")
