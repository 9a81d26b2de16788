"""The `--cluster` command sequence (pure plan), its executor on harmless local commands, and `connect` errors."""

import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest

import studies.runner.runtime as rt
from studies.runner.runtime import (
    Command,
    connect,
    execute_plan,
    plan_cluster_run,
    run_on_cluster,
)

AWS = Path(__file__).resolve().parents[2] / "cluster" / "aws.yaml"
STUDY = ["studies/ablation.py", "--preset", "small", "--storage", "/home/ubuntu/dsr-results"]


def _plan(**kw):
    kw.setdefault("submission_id", "dsr-test-1")
    return plan_cluster_run(AWS, STUDY, "/tmp/local-results", local_port=18265, **kw)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_plan_brings_up_or_reuses_tunnels_submits_and_fetches() -> None:
    steps = _plan(storage="/home/ubuntu/dsr-results")
    verbs = [" ".join(step.argv[1:3]) for step in steps]
    assert verbs == ["get-auth-token --generate", "up -y", "dashboard --port", "job submit", f"rsync-down {AWS}"]
    token, up, tunnel, submit, fetch = steps
    assert token.quiet  # the token is never printed
    assert "--no-restart" in up.argv and up.argv[-1] == str(AWS)  # a running cluster is reused, not restarted
    assert tunnel.background and tunnel.ready_port == 18265
    assert submit.argv[submit.argv.index("--address") + 1] == "http://127.0.0.1:18265"
    assert submit.argv[submit.argv.index("--submission-id") + 1] == "dsr-test-1"
    assert submit.env["RAY_AUTH_MODE"] == "token"
    dash = submit.argv.index("--")
    assert list(submit.argv[dash + 1:]) == ["python", *STUDY]
    runtime_env = json.loads(submit.argv[submit.argv.index("--runtime-env-json") + 1])
    assert Path(runtime_env["working_dir"]) == rt.PROJECT_DIR
    assert {"/.venv", "/.git", "/data", "/results"} <= set(runtime_env["excludes"])  # anchored: keeps dsr/data
    assert fetch.always and fetch.argv[-2:] == ("/home/ubuntu/dsr-results/", "/tmp/local-results/")


def test_plan_with_s3_storage_copies_nothing_back_and_can_tear_down() -> None:
    steps = _plan(storage="s3://bucket/dsr", down=True)
    assert not any("rsync-down" in step.argv for step in steps)
    assert steps[-1].argv[1:] == ("down", "-y", str(AWS)) and steps[-1].always


def test_executor_runs_in_order_waits_for_the_tunnel_and_ends_it(tmp_path: Path) -> None:
    port = _free_port()
    log = tmp_path / "log.txt"
    server = (sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port))
    append = lambda word: (sys.executable, "-c", f"open({str(log)!r}, 'a').write({word!r} + ' ')")
    probe = (sys.executable, "-c", f"import socket; socket.create_connection(('127.0.0.1', {port})).close()")
    pid_file = tmp_path / "server.pid"
    steps = [
        Command(append("first"), "first"),
        Command(("sh", "-c", f"echo $$ > {pid_file}; exec {' '.join(server)} 2>/dev/null"), "server",
                background=True, ready_port=port),
        Command(probe, "the server is up when the next step runs"),
        Command(append("last"), "last", env={"UNUSED": "1"}),
    ]
    assert execute_plan(steps, cwd=tmp_path, ready_timeout_s=30) == 0
    assert log.read_text().split() == ["first", "last"]
    server_pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):  # the background step was ended (and reaped) by its pid
        os.kill(server_pid, 0)


def test_executor_after_a_failure_runs_only_the_always_steps(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    append = lambda word: (sys.executable, "-c", f"open({str(log)!r}, 'a').write({word!r} + ' ')")
    steps = [
        Command(append("up"), "up"),
        Command((sys.executable, "-c", "raise SystemExit(3)"), "the study fails"),
        Command(append("skipped"), "skipped"),
        Command(append("fetch"), "fetch", always=True),
    ]
    assert execute_plan(steps, cwd=tmp_path) == 3
    assert log.read_text().split() == ["up", "fetch"]


def test_executor_reports_a_tunnel_that_never_opens(tmp_path: Path) -> None:
    steps = [Command((sys.executable, "-c", "pass"), "tunnel", background=True, ready_port=_free_port()),
             Command((sys.executable, "-c", "raise SystemExit(9)"), "not reached")]
    assert execute_plan(steps, cwd=tmp_path, ready_timeout_s=10) == 1


def test_run_on_cluster_rejects_a_bad_file_before_running_anything(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(rt, "execute_plan", lambda *a, **k: pytest.fail("nothing may run for a bad cluster file"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("cluster_name: x\nmax_workers: many\nprovider: {type: aws, region: us-east-1}\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        run_on_cluster(bad, STUDY, tmp_path / "results")
    assert not (tmp_path / "results").exists()


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
