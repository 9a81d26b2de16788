"""The real ablation study on a real two-node Ray, submitted as a Ray job the way `--cluster` submits it.

Head and worker are hosts in their own network and mount namespaces (namespaced_cluster): each has its own /tmp
and home and does not see this checkout, so the project arrives only as the job's working_dir, the dataset only
through `--data s3://...` and every result only through `--storage s3://...` on an S3 API server (moto) on a host
of its own. Nothing can pass between the nodes through a shared disk.

- Losing the worker node mid-study (its raylet killed): every trial still finishes, the interrupted one from its
  last checkpoint in S3 (with --max-failures 0: a lost node is not the trial's failure); the driver's log is
  copied to S3; the report is then built from `s3://`.
- Losing the whole cluster mid-study: a fresh cluster with `--resume` and the same storage finishes the study;
  no finished trial and no finished stage 1 runs again. The driver uploads the experiment state before the
  trials' result.json files, so a loss can fall between the two and leave a finished trial whose stored results
  stop short of its end; the test makes that happen to one trial, and its end comes back from its final checkpoint.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image

from namespaced_cluster import (ClusterHandle, multinode_cluster, namespaces_available, private_network, s3_host,
                                _netns_pids)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cluster"))
from jobs import output, submit_argv  # noqa: E402

BUCKET = "dsr-study"
CATEGORIES = ("plate", "tile")
VARIANTS = ("DSR", "DSR_U-")
STAGE2_ITERATIONS = 600
STUDY_ARGS = ["--preset", "tiny", "--variants", *VARIANTS, "--dataset", "mvtec", "--data", f"s3://{BUCKET}/parts",
              "--categories", *CATEGORIES, "--set", f"stage2_iterations={STAGE2_ITERATIONS}", "--checkpoint-every",
              "20", "--report-every", "10", "--no-report"]
# Run on a client beside the cluster: every result.json of an experiment in S3, as {trial folder: [rows]}.
READ_RESULTS = """
import json, sys, boto3
bucket, prefix = sys.argv[1], sys.argv[2]
s3, found = boto3.client("s3"), {}
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
    for item in page.get("Contents", []):
        key = item["Key"]
        parts = key[len(prefix):].split("/")
        if len(parts) == 2 and parts[1] == "result.json":
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
            found[parts[0]] = [json.loads(line) for line in body.splitlines() if line.strip()]
        elif parts[-1] in ("records.npz", "latent.pt") or parts[-1].startswith("driver-"):
            found.setdefault("_files", []).append(key[len(prefix):])
print(json.dumps(found))
"""
UPLOAD = """
import sys, boto3
from pathlib import Path
s3, folder = boto3.client("s3"), Path(sys.argv[1])
s3.create_bucket(Bucket=sys.argv[2])
for path in sorted(p for p in folder.rglob("*") if p.is_file()):
    s3.upload_file(str(path), sys.argv[2], f"{sys.argv[3]}/{path.relative_to(folder).as_posix()}")
"""

# Run on a client beside the cluster: keep the first N lines of an object (a result.json cut short).
CUT = """
import sys, boto3
s3, bucket, key, keep = boto3.client("s3"), sys.argv[1], sys.argv[2], int(sys.argv[3])
lines = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode().splitlines(keepends=True)
s3.put_object(Bucket=bucket, Key=key, Body="".join(lines[:keep]).encode())
"""

# Limits that only end a hung run, never a slow one: a shared 2-core machine runs a phase here in 3 to 10 minutes.
JOB_LIMIT_S = 1200

_ok, _reason = namespaces_available()
pytestmark = [pytest.mark.skipif(not _ok, reason=f"namespaces cannot be created here: {_reason}"), pytest.mark.slow,
              pytest.mark.timeout(3600)]


def _tiny_mvtec(root: Path) -> None:
    """Two categories in MVTec's layout (64x64 noise textures; bright-square defects with masks)."""
    rng = np.random.default_rng(0)
    for c, category in enumerate(CATEGORIES):
        def texture() -> np.ndarray:
            return np.clip(rng.normal(100 + 40 * c, 20, (64, 64, 3)), 0, 255).astype(np.uint8)

        for split, count in (("train/good", 6), ("test/good", 3)):
            (root / category / split).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(texture()).save(root / category / split / f"{i:03d}.png")
        (root / category / "test/spot").mkdir(parents=True)
        (root / category / "ground_truth/spot").mkdir(parents=True)
        for i in range(3):
            image, mask = texture(), np.zeros((64, 64), np.uint8)
            image[20 + i:36 + i, 24:40] = 250
            mask[20 + i:36 + i, 24:40] = 255
            Image.fromarray(image).save(root / category / "test/spot" / f"{i:03d}.png")
            Image.fromarray(mask).save(root / category / "ground_truth/spot" / f"{i:03d}_mask.png")


@pytest.fixture(scope="module")
def network_and_s3(tmp_path_factory):
    """A private network with an S3 server on it, the dataset uploaded; clusters come and go on this network."""
    parts = tmp_path_factory.mktemp("parts")
    _tiny_mvtec(parts)
    with private_network() as network, s3_host(network) as s3:
        uploaded = subprocess.run(["ip", "netns", "exec", network.hosts[-1], sys.executable, "-c", UPLOAD,
                                   str(parts), BUCKET, "parts"], env={**_base_env(), **s3.env},
                                  capture_output=True, text=True, timeout=120)
        assert uploaded.returncode == 0, uploaded.stderr[-2000:]
        yield network, s3


def _base_env() -> dict[str, str]:
    import os

    return dict(os.environ)


def _results(cluster: ClusterHandle, s3, prefix: str) -> dict:
    run = cluster.run_client([sys.executable, "-c", READ_RESULTS, BUCKET, prefix], env=s3.env, timeout=60)
    assert run.returncode == 0, output(run)
    return json.loads(run.stdout.strip().splitlines()[-1])


def _trial_actors(namespace: str) -> list[int]:
    found = []
    for pid in _netns_pids(namespace):
        try:
            if "ImplicitFunc" in psutil.Process(pid).name():
                found.append(pid)
        except psutil.Error:
            continue
    return found


def _submit(cluster: ClusterHandle, s3, storage: str, log: Path, *extra: str) -> subprocess.Popen:
    entrypoint = ["python", "studies/ablation.py", *STUDY_ARGS, "--storage", storage, "--address", "auto", *extra]
    handle = open(log, "w")
    return cluster.popen_client(submit_argv(cluster, entrypoint, env=s3.env), stdout=handle,
                                stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[2])


def _wait(proc: subprocess.Popen, log: Path, timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"the job did not end within {timeout:.0f} s:\n{log.read_text()[-4000:]}") from None


def _done(rows: list[dict]) -> bool:
    return bool(rows) and rows[-1].get("stage") == "done"


def test_ablation_job_on_two_nodes_survives_losing_the_worker(network_and_s3, tmp_path: Path) -> None:
    network, s3 = network_and_s3
    prefix = "lose-worker/ablation/"
    with multinode_cluster(num_workers=1, cpus_per_node=1, include_dashboard=True, network=network,
                           env=s3.env) as cluster:
        worker_ns = cluster.namespaces[1]
        # --max-failures 0: a trial whose node is lost is retried all the same (not its own failure)
        job = _submit(cluster, s3, f"s3://{BUCKET}/lose-worker", tmp_path / "job.log", "--max-failures", "0")
        # Once stage 1 is in S3, wait for a main trial that has run on the worker for a while (several
        # checkpoints), then lose the worker node.
        deadline, seen_since, stage1_done = time.monotonic() + JOB_LIMIT_S, {}, False
        while True:
            assert job.poll() is None, (tmp_path / "job.log").read_text()[-4000:]
            assert time.monotonic() < deadline, (tmp_path / "job.log").read_text()[-4000:]
            if not stage1_done:
                stage1_done = any(f.endswith("latent.pt") for f in _results(cluster, s3, prefix).get("_files", []))
            else:
                now = time.monotonic()
                actors = _trial_actors(worker_ns)
                seen_since = {pid: seen_since.get(pid, now) for pid in actors}
                old = [pid for pid, since in seen_since.items() if now - since > 8]
                if old:
                    killed_actor = old[0]
                    break
            time.sleep(1.0)
        cluster.kill_raylet(1)
        code = _wait(job, tmp_path / "job.log", JOB_LIMIT_S)
        log = (tmp_path / "job.log").read_text()
        assert code == 0, log[-4000:]
        time.sleep(1)
        results = _results(cluster, s3, prefix)
        report = cluster.run_client([sys.executable, "-m", "reports", f"s3://{BUCKET}/lose-worker/ablation",
                                     "--out", str(tmp_path / "report")], env=s3.env, timeout=180,
                                    cwd=Path(__file__).resolve().parents[2])
    trials = {name: rows for name, rows in results.items() if name != "_files" and name != "stage1"}
    assert len(trials) == len(VARIANTS) * len(CATEGORIES), sorted(trials)
    assert all(_done(rows) for rows in trials.values()), {k: v[-1:] for k, v in trials.items()}
    nodes = {r["node_ip"] for rows in trials.values() for r in rows}
    assert nodes == {cluster.head_ip, *cluster.worker_ips}
    # The trial that was running on the lost node finished on the head, from its last checkpoint in S3.
    (interrupted,) = [rows for rows in trials.values() if any(r["pid"] == killed_actor for r in rows)]
    before = [r for r in interrupted if r["pid"] == killed_actor]
    after = [r for r in interrupted if r["pid"] != killed_actor]
    assert {r["node_ip"] for r in before} == {cluster.worker_ips[0]}
    assert after and {r["node_ip"] for r in after} == {cluster.head_ip}
    saved = [r["train_iteration"] for r in before
             if r["stage"] in ("stage2", "stage3") and r.get("checkpoint_dir_name")]
    assert saved, before[-3:]
    first = next(r for r in after if r["stage"] in ("stage2", "stage3", "done"))
    shown = ([(r["stage"], r.get("train_iteration"), r.get("checkpoint_dir_name")) for r in before[-4:]],
             [(r["stage"], r.get("train_iteration")) for r in after[:3]])
    # went on from a checkpoint it had written to S3 before the node was lost (not from the stage's start)
    assert first["train_iteration"] > 20 and any(0 < first["train_iteration"] - c <= 10 for c in saved), shown
    # Every main trial only loaded the one stage-1 model, which was trained once.
    assert {r["stage1_source"] for rows in trials.values() for r in rows if r.get("stage1_source")} == {"loaded"}
    assert len([f for f in results["_files"] if f.endswith("latent.pt")]) == 1
    assert "not counted against --max-failures" in log
    assert any(f.startswith("driver-") for f in results["_files"])  # the driver's log is in storage too
    assert report.returncode == 0, output(report)
    text = (tmp_path / "report" / "report.md").read_text()
    assert all(variant in text for variant in VARIANTS)


def test_losing_the_whole_cluster_then_resume_reruns_nothing_finished(network_and_s3, tmp_path: Path) -> None:
    network, s3 = network_and_s3
    prefix = "lose-all/ablation/"
    storage = f"s3://{BUCKET}/lose-all"
    with multinode_cluster(num_workers=1, cpus_per_node=1, include_dashboard=True, network=network,
                           env=s3.env) as first:
        job = _submit(first, s3, storage, tmp_path / "first.log")
        deadline = time.monotonic() + JOB_LIMIT_S
        while True:  # a finished trial whose end the driver has uploaded (result.json says done)
            assert job.poll() is None, (tmp_path / "first.log").read_text()[-4000:]
            assert time.monotonic() < deadline, (tmp_path / "first.log").read_text()[-4000:]
            seen = _results(first, s3, prefix)
            finished = {name: rows for name, rows in seen.items() if name not in ("_files", "stage1") and _done(rows)}
            if finished:
                break
            time.sleep(2.0)
        time.sleep(12)  # one more upload of the experiment's state (SYNC_PERIOD_S) after that trial's end
        seen = _results(first, s3, prefix)
        finished = {name: rows for name, rows in seen.items() if name not in ("_files", "stage1") and _done(rows)}
        assert len(finished) < len(VARIANTS) * len(CATEGORIES), "the study ended before the cluster was lost"
    job.wait(timeout=60)  # the client loses its cluster: its job is gone with it

    with multinode_cluster(num_workers=1, cpus_per_node=1, include_dashboard=True, network=network,
                           env=s3.env) as second:
        # A loss between the upload of the experiment state (which says this trial finished) and that of the
        # trials' results (Tune uploads them in that order, each sync): the stored result.json stops short of
        # the trial's end, two rows before it.
        cut = sorted(finished)[0]
        shortened = second.run_client([sys.executable, "-c", CUT, BUCKET, f"{prefix}{cut}/result.json",
                                       str(len(finished[cut]) - 2)], env=s3.env, timeout=60)
        assert shortened.returncode == 0, output(shortened)
        job = _submit(second, s3, storage, tmp_path / "second.log", "--resume")
        code = _wait(job, tmp_path / "second.log", JOB_LIMIT_S)
        log = (tmp_path / "second.log").read_text()
        assert code == 0, log[-4000:]
        after = _results(second, s3, prefix)
    trials = {name: rows for name, rows in after.items() if name not in ("_files", "stage1")}
    assert len(trials) == len(VARIANTS) * len(CATEGORIES) and all(_done(rows) for rows in trials.values())
    for name, rows in finished.items():  # finished before the loss: not run again
        if name != cut:
            assert trials[name] == rows, name
    # The cut trial was not run again either: its end was recorded from its final checkpoint.
    recovered = trials[cut]
    assert recovered[:-1] == finished[cut][:-2], [r.get("stage") for r in recovered[-3:]]
    assert recovered[-1]["stage"] == "done" and recovered[-1].get("recovered_from_checkpoint")
    metrics = ("image_auroc", "pixel_ap", "train_iteration", "checkpoint_dir_name")
    assert {k: recovered[-1][k] for k in metrics} == {k: finished[cut][-1][k] for k in metrics}
    assert "had finished, but their end was lost" in log
    assert "stage 1: training" not in log  # the stage-1 model was in S3: the phase was skipped
    assert len([f for f in after["_files"] if f.endswith("latent.pt")]) == 1
