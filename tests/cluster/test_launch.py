"""`--cluster FILE`: every check before anything starts, `--dry-run` (the commands and Ray's own package, no
cloud contacted), the study's command line on the head, and joining an existing cluster in one line."""

from __future__ import annotations

import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import studies.runner.launch as launch
from studies.ablation import STUDY
from studies.runner.harness import build_parser
from studies.runner.runtime import PROJECT_DIR, connect

AWS = PROJECT_DIR / "cluster" / "aws.yaml"


def _prepare(*argv: str) -> launch.ClusterRun:
    args = build_parser(STUDY).parse_args(list(argv))
    return launch.prepare_cluster_run(STUDY.name, args, list(argv))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def no_cloud(monkeypatch: pytest.MonkeyPatch) -> None:
    """Anything that would start or reach a cluster fails the test."""
    from ray.autoscaler import sdk

    def refuse(*args, **kwargs):
        pytest.fail("a cluster was contacted")

    for name in ("create_or_update_cluster", "teardown_cluster", "run_on_cluster"):
        monkeypatch.setattr(sdk, name, refuse)
    monkeypatch.setattr(launch, "launch", refuse)
    monkeypatch.setattr(launch, "submit_and_follow", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)


def test_dry_run_prints_the_commands_then_every_packaged_file(no_cloud, capsys) -> None:
    argv = ["--cluster", str(AWS), "--dry-run", "--preset", "tiny", "--storage", "s3://bucket/dsr", "--name", "x"]
    assert launch.run_cluster_command(STUDY.name, build_parser(STUDY).parse_args(argv), argv) == 0
    lines = capsys.readouterr().out.splitlines()
    commands = [line for line in lines if line.startswith(("cd ", "ray ", "RAY_AUTH_MODE"))]
    verbs = [shlex.split(line.split("  #")[0])[:2] for line in commands]
    assert verbs == [["cd", str(PROJECT_DIR)], ["ray", "get-auth-token"], ["ray", "up"], ["ray", "dashboard"],
                     ["RAY_AUTH_MODE=token", "ray"]]
    assert lines.index(commands[-1]) < lines.index("dsr/__init__.py")  # commands first, then the files
    files = lines[[i for i, line in enumerate(lines) if line.startswith("# the package")][0] + 1:]
    modules = {p.relative_to(PROJECT_DIR).as_posix() for p in (PROJECT_DIR / "dsr").rglob("*.py")}
    assert {m for m in modules if m.startswith("dsr/data/")} and modules <= set(files), sorted(modules - set(files))
    assert "studies/ablation.py" in files and "pyproject.toml" in files
    assert not [f for f in files if f.startswith((".venv/", "results/", "data/", ".git/")) or "__pycache__" in f]
    assert "ray down" in "\n".join(lines)  # how to tear the cluster down is said


def test_the_study_on_the_head_joins_its_cluster_with_the_same_options() -> None:
    run = _prepare("--cluster", str(AWS), "--preset", "tiny", "--storage", "s3://bucket/dsr", "--down",
                   "--variants", "DSR", "DSR_random", "--seeds", "2")
    assert run.entrypoint[:2] == ("python", "studies/ablation.py") and run.down
    args = build_parser(STUDY).parse_args(list(run.entrypoint[2:]))  # the head parses it with the same parser
    assert args.address == "auto" and args.cluster is None and not args.dry_run and not args.down
    assert args.storage == "s3://bucket/dsr" and args.variants == ["DSR", "DSR_random"] and args.seeds == 2
    assert run.experiment == "s3://bucket/dsr/ablation"
    assert run.runtime_env["working_dir"] == str(PROJECT_DIR) and "/data" in run.runtime_env["excludes"]
    assert run.config["file_mounts"]["/home/ubuntu/dsr-deps/pyproject.toml"] == str(PROJECT_DIR / "pyproject.toml")
    assert run.commands()[-1] == f"ray down -y {AWS}"


def test_storage_shared_mount_path_is_passed_on() -> None:
    run = _prepare("--cluster", str(AWS), "--storage", "/mnt/efs/dsr")
    assert run.storage == "/mnt/efs/dsr" and run.entrypoint[-4:] == ("--storage", "/mnt/efs/dsr", "--address", "auto")


@pytest.mark.parametrize("argv, problem", [
    ([], "--storage"),  # the default: this machine's results folder
    (["--storage", "results"], "--storage results"),
    (["--storage", "file:///tmp/x"], "--storage file:///tmp/x"),
    (["--storage", "s3://b/x", "--data", "data/mvtec"], "--data data/mvtec"),
])
def test_storage_or_data_the_nodes_cannot_reach_is_refused_in_one_line(no_cloud, argv, problem) -> None:
    with pytest.raises(ValueError) as info:
        _prepare("--cluster", str(AWS), *argv)
    assert problem in str(info.value) and "\n" not in str(info.value)


def test_study_command_refuses_bad_cluster_input_with_exit_2_before_anything(tmp_path: Path) -> None:
    """Through the study's own command line, in a fresh process: no cloud client, no Ray started."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("cluster_name: x\nmax_workers: many\nprovider: {type: aws, region: us-east-1}\n")
    cases = [(["--cluster", str(bad), "--storage", "s3://b/x"], "bad.yaml"),
             (["--cluster", str(AWS)], "--storage")]
    for argv, named in cases:
        run = subprocess.run([sys.executable, "studies/ablation.py", *argv, "--preset", "tiny"], cwd=PROJECT_DIR,
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 2, run.stderr[-2000:]
        error = run.stderr.strip().splitlines()
        assert len(error) == 1 and error[0].startswith("error:") and named in error[0]


@pytest.mark.parametrize("address", ["", "nohost", "host:", "host:port", "host:70000", "ray://:10001"])
def test_connect_rejects_malformed_addresses(address: str) -> None:
    with pytest.raises(ValueError, match="--address"):
        connect(address)


def test_connect_to_nothing_fails_fast_in_one_line() -> None:
    address = f"127.0.0.1:{_free_port()}"
    start = time.monotonic()
    with pytest.raises(ConnectionError) as info:
        connect(address)
    assert time.monotonic() - start < 10
    assert address in str(info.value) and "\n" not in str(info.value)
