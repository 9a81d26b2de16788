"""Where a study's Ray runs: an embedded local Ray on loopback, an existing cluster, or a launcher cluster.

The harness picks one per command line:
- no flag: `init_local_ray()` starts a fresh embedded Ray whose every server listens on 127.0.0.1 only;
- `--address ADDR`: `connect(ADDR)` joins a running cluster (checked reachable first, errors in one line);
- `--cluster FILE`: `run_on_cluster(FILE, study_argv, results_dir)` brings the launcher cluster up (or reuses it),
  submits the study through Ray Jobs, streams its output and brings the results back.

`run_on_cluster` only executes a list of commands that the pure function `plan_cluster_run` builds, so the exact
sequence (`ray up`, the dashboard tunnel, `ray job submit`, `ray rsync-down`) is unit-tested without a cloud.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PROJECT_DIR = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
REMOTE_RESULTS = "/home/ubuntu/dsr-results"  # default storage on the head of cluster/aws.yaml (ssh_user ubuntu)
DASHBOARD_PORT = 8265
# Kept out of the Ray Jobs upload of the project (Ray also honours the project's .gitignore). Anchored with "/":
# Ray's gitignore-style patterns match at any depth otherwise, and a bare "data" also drops the package dsr/data/.
UPLOAD_EXCLUDES = ("/.venv", "/.git", "**/__pycache__", "*.egg-info", "/results", "/data", ".pytest_cache")


# --------------------------------------------------------------------------------------------- local Ray


def init_local_ray(num_cpus: int | None = None, num_gpus: int | None = None, *, include_dashboard: bool = True) -> None:
    """Start a fresh embedded Ray for this process with every server bound to loopback, never all interfaces.

    A single-node Ray binds to the machine's address unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0. Ray reads that
    switch once at import (the driver) and from the environment (every process it spawns), so both are set here;
    the dashboard, when included, listens on 127.0.0.1 too. After start-up the listening sockets of every process
    Ray started are checked: anything off loopback shuts Ray down and raises RuntimeError.
    `address="local"` always starts a new Ray: a stale cluster address file can never hang this call.
    """
    import ray
    from ray._private import ray_constants

    if ray.is_initialized():
        raise RuntimeError("Ray is already initialised in this process; call ray.shutdown() first")
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False  # the driver imported Ray before the variable was set
    ray.init(
        address="local",
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        include_dashboard=include_dashboard,
        dashboard_host=LOOPBACK,
        logging_level="WARNING",
    )
    exposed = [entry for entry in local_listeners() if not _is_loopback(entry[2])]
    if exposed:
        ray.shutdown()
        raise RuntimeError(f"embedded Ray listened off loopback, shut it down: {exposed}")


def local_listeners() -> list[tuple[int, str, str, int]]:
    """(pid, process name, ip, port) of every listening TCP socket of this process and all its descendants."""
    import psutil

    me = psutil.Process()
    found = []
    for proc in [me, *me.children(recursive=True)]:
        try:
            name = proc.name()
            connections = proc.net_connections(kind="tcp")
        except psutil.Error:  # exited meanwhile
            continue
        for conn in connections:
            if conn.status == psutil.CONN_LISTEN:
                found.append((proc.pid, name, conn.laddr.ip, conn.laddr.port))
    return found


def _is_loopback(ip: str) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback (::ffff:127.x.y.z)."""
    import ipaddress

    address = ipaddress.ip_address(ip.split("%", 1)[0])
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


# ----------------------------------------------------------------------------------------- existing cluster


def connect(address: str, timeout_s: float = 5.0) -> None:
    """Join the running Ray cluster at `address`: "host:port" (GCS), "ray://host:port" (Ray Client) or "auto".

    A "host:port" is first checked to accept TCP connections, so a wrong address fails in seconds. Raises
    ValueError for a malformed address, ConnectionError (one line) when nothing answers or Ray refuses, e.g. a
    cluster with token authentication joined without RAY_AUTH_MODE=token and its token.
    """
    import ray

    address = address.strip()
    if address != "auto":
        host, port = _split_address(address)
        if not address.startswith("ray://"):
            try:
                socket.create_connection((host, port), timeout=timeout_s).close()
            except OSError as err:
                raise ConnectionError(f"--address {address}: no Ray cluster answers there ({err})") from None
    try:
        ray.init(address=address, logging_level="WARNING")
    except ConnectionError as err:
        mode = os.environ.get("RAY_AUTH_MODE", "unset")
        raise ConnectionError(
            f"--address {address}: could not join the Ray cluster ({err}); if it uses token authentication, "
            f"set RAY_AUTH_MODE=token (here: {mode}) and the cluster's token in RAY_AUTH_TOKEN or ~/.ray/auth_token"
        ) from None


def _split_address(address: str) -> tuple[str, int]:
    """("host", port) of "host:port" or "ray://host:port"; ValueError naming --address otherwise."""
    bare = address.removeprefix("ray://")
    host, sep, port = bare.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--address {address!r}: expected host:port, ray://host:port or auto")
    return host, int(port)


# ------------------------------------------------------------------------------------------- cluster file


def load_cluster_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a Ray cluster launcher YAML and check it as `ray up` does; returns it with Ray's defaults filled in.

    Runs Ray's own `prepare_config` and `validate_config` (the JSON schema ray-schema.json and its extra rules),
    which need no cloud access. Raises FileNotFoundError, or ValueError with one line naming the file and what is
    wrong (YAML syntax, or the failing field and Ray's message).
    """
    from ray.autoscaler._private.util import prepare_config, validate_config

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cluster file {path}: not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"cluster file {path}: not valid YAML: {_one_line(_yaml_problem(err))}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"cluster file {path}: expected a mapping of Ray cluster fields, got {type(raw).__name__}")
    util_logger = logging.getLogger("ray.autoscaler._private.util")
    level = util_logger.level
    util_logger.setLevel(logging.WARNING)  # prepare_config logs its defaults at INFO
    try:
        prepared = prepare_config(copy.deepcopy(raw))
        validate_config(prepared)
    except Exception as err:  # jsonschema.ValidationError, ValueError, KeyError, ...: all are a bad config here
        raise ValueError(f"cluster file {path}: fails Ray's cluster config validation: {_validation_problem(err)}") from None
    finally:
        util_logger.setLevel(level)
    return prepared


def _yaml_problem(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark else problem


def _validation_problem(err: Exception) -> str:
    """Ray's message, prefixed by the failing field path for schema errors."""
    where = "/".join(str(part) for part in getattr(err, "absolute_path", ()) or ())
    message = getattr(err, "message", None) or (f"missing field {err}" if isinstance(err, KeyError) else str(err))
    return _one_line(f"{where}: {message}" if where else message)


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


# --------------------------------------------------------------------------------------- launcher cluster


@dataclass(frozen=True)
class Command:
    """One step of a cluster run: a command line and how to run it."""

    argv: tuple[str, ...]
    purpose: str
    env: Mapping[str, str] = field(default_factory=dict)  # added to the caller's environment
    background: bool = False  # keeps running while the later steps run; ended (by pid) at the end
    ready_port: int | None = None  # background only: wait until 127.0.0.1:port accepts connections
    quiet: bool = False  # output is captured and dropped (the token command prints the token)
    always: bool = False  # runs even after an earlier step failed (fetch results, tear down)


def is_remote_storage(storage: str) -> bool:
    """True for a URI such as s3://bucket/prefix (results are already off the cluster); False for a path."""
    return "://" in storage


def plan_cluster_run(
    cluster_file: str | os.PathLike[str],
    study_argv: Sequence[str],
    local_results_dir: str | os.PathLike[str],
    *,
    storage: str = REMOTE_RESULTS,
    submission_id: str,
    project_dir: str | os.PathLike[str] = PROJECT_DIR,
    local_port: int = DASHBOARD_PORT,
    python: str = "python",
    ray_cli: str = "ray",
    down: bool = False,
) -> list[Command]:
    """The commands that run one study on the launcher cluster of `cluster_file`, in order. Pure: runs nothing.

    1. `ray get-auth-token --generate`: make sure the local token exists (the cluster file mounts it on every node);
    2. `ray up -y --no-restart FILE`: start the cluster, or reuse a running one without restarting Ray;
    3. `ray dashboard --port P FILE` (background): an SSH tunnel to the head's loopback-only dashboard;
    4. `ray job submit ... -- python STUDY_ARGV`: upload the project as the job's working_dir, run the study on the
       head with RAY_AUTH_MODE=token, stream its output; exits non-zero when the study fails;
    5. `ray rsync-down FILE STORAGE/ LOCAL/` when `storage` is a path on the head (nothing when it is s3://...);
    6. `ray down -y FILE` when `down`.
    `study_argv` is the study's command line without `--cluster` (e.g. ["studies/ablation.py", "--preset",
    "small", ...]); it must make the study write its results to `storage`.
    """
    cluster_file = str(Path(cluster_file).resolve())
    runtime_env = {
        "working_dir": str(Path(project_dir).resolve()),
        "excludes": list(UPLOAD_EXCLUDES),
        "env_vars": {"PYTHONUNBUFFERED": "1"},
    }
    steps = [
        Command((ray_cli, "get-auth-token", "--generate"), "make sure the Ray auth token exists", quiet=True),
        Command((ray_cli, "up", "-y", "--no-restart", "--disable-usage-stats", cluster_file),
                "start the cluster or reuse the running one"),
        Command((ray_cli, "dashboard", "--port", str(local_port), cluster_file),
                "tunnel the head's dashboard (Ray Jobs API) to this machine", background=True, ready_port=local_port),
        Command(
            (ray_cli, "job", "submit", "--address", f"http://{LOOPBACK}:{local_port}", "--submission-id",
             submission_id, "--runtime-env-json", json.dumps(runtime_env, sort_keys=True), "--", python,
             *study_argv),
            "run the study as a Ray job and stream its output",
            env={"RAY_AUTH_MODE": "token"},
        ),
    ]
    if not is_remote_storage(storage):
        steps.append(Command((ray_cli, "rsync-down", cluster_file, storage.rstrip("/") + "/",
                              str(Path(local_results_dir).resolve()) + "/"),
                             "copy the results from the head", always=True))
    if down:
        steps.append(Command((ray_cli, "down", "-y", cluster_file), "tear the cluster down", always=True))
    return steps


def execute_plan(steps: Sequence[Command], cwd: str | os.PathLike[str], ready_timeout_s: float = 120.0) -> int:
    """Run `steps` in order in `cwd`; returns 0, or the exit code of the first failing step.

    After a failure only the steps marked `always` still run. Background steps are ended at the end by their
    process group (SIGTERM, then SIGKILL), also on an exception or Ctrl-C.
    """
    background: list[subprocess.Popen[bytes]] = []
    status = 0
    try:
        for step in steps:
            if status and not step.always:
                continue
            env = {**os.environ, **step.env}
            if step.background:
                proc = subprocess.Popen(step.argv, cwd=cwd, env=env, start_new_session=True)
                background.append(proc)
                if step.ready_port is not None and not _wait_for_port(step.ready_port, proc, ready_timeout_s):
                    print(f"ray_runtime: {step.purpose} failed: 127.0.0.1:{step.ready_port} not open", file=sys.stderr)
                    status = status or 1
                continue
            output = subprocess.DEVNULL if step.quiet else None
            code = subprocess.run(step.argv, cwd=cwd, env=env, stdout=output, check=False).returncode
            if code:
                print(f"ray_runtime: {step.purpose} failed (exit {code}): {' '.join(step.argv[:4])} ...",
                      file=sys.stderr)
                status = status or code
    finally:
        for proc in background:
            _end_process_group(proc)
    return status


def run_on_cluster(
    cluster_file: str | os.PathLike[str],
    study_argv: Sequence[str],
    local_results_dir: str | os.PathLike[str],
    *,
    storage: str = REMOTE_RESULTS,
    down: bool = False,
) -> int:
    """Run a study on the Ray cluster that `cluster_file` describes and bring its results into `local_results_dir`.

    Checks the file first (one-line ValueError before anything starts), then executes `plan_cluster_run` from the
    project directory. Returns the exit code: 0 when the study succeeded and its results were copied back.
    """
    load_cluster_file(cluster_file)
    Path(local_results_dir).mkdir(parents=True, exist_ok=True)
    ray_cli = Path(sys.executable).with_name("ray")
    steps = plan_cluster_run(
        cluster_file,
        study_argv,
        local_results_dir,
        storage=storage,
        submission_id=f"dsr-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",
        local_port=_free_local_port(),
        ray_cli=str(ray_cli) if ray_cli.exists() else "ray",
        down=down,
    )
    return execute_plan(steps, cwd=PROJECT_DIR)


def _free_local_port() -> int:
    """A TCP port on loopback that nothing listens on now (8265 may be a local Ray's own dashboard)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """Wait until 127.0.0.1:port accepts a connection; False if `proc` exits or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not _has_exited(proc):
        try:
            socket.create_connection((LOOPBACK, port), timeout=1.0).close()
            return True
        except OSError:
            time.sleep(0.5)
    return False


def _has_exited(proc: subprocess.Popen[bytes]) -> bool:
    """Whether `proc` has exited, without reaping it (its pid, and so its group id, stays reserved)."""
    if proc.returncode is not None:
        return True
    return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _end_process_group(proc: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
    """End the process group that `proc` leads (started in its own session): SIGTERM, then SIGKILL what is left.

    `proc` is reaped only at the very end, so until then its group id cannot name an unrelated process.
    """
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and not _has_exited(proc):
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # children of the leader (the tunnel's ssh) may outlive it
    proc.wait()
