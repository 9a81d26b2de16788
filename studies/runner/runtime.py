"""Where a study's Ray runs: an embedded local Ray on loopback, or an existing cluster; and what ships to it.

The harness picks one per command line:
- no flag: `init_local_ray()` starts a fresh embedded Ray whose every server listens on 127.0.0.1 only;
- `--address ADDR`: `connect(ADDR)` joins a running cluster (checked reachable first, errors in one line) and,
  unless the study already runs as a Ray job, ships the project to it as the job's working_dir;
- `--cluster FILE`: studies.runner.launch brings a launcher cluster up and submits the study through Ray Jobs
  (`load_cluster_file` here checks the file first).

The project reaches other nodes one way only: Ray's working_dir package of the repository (`project_runtime_env`),
with the anchored `UPLOAD_EXCLUDES`; the nodes themselves only hold the dependencies (cluster/aws.yaml).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import socket
from pathlib import Path
from typing import Any

import yaml

PROJECT_DIR = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
DASHBOARD_PORT = 8265
# Kept out of the Ray Jobs upload of the project (Ray also honours the project's .gitignore). Anchored with "/":
# Ray's gitignore-style patterns match at any depth otherwise, and a bare "data" also drops the package dsr/data/.
UPLOAD_EXCLUDES = ("/.venv", "/.git", "**/__pycache__", "*.egg-info", "/results", "/data", ".pytest_cache")
# Set by Ray's job manager in the environment of a job's driver: its runtime env (working_dir) already applies.
_JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def project_runtime_env(project_dir: str | os.PathLike[str] = PROJECT_DIR) -> dict[str, Any]:
    """The Ray runtime env that ships this project to every node: its folder as working_dir, anchored excludes.

    Ray packages the folder itself (and honours .gitignore), puts the package on every node that runs a task of
    the job and makes it the working directory and first sys.path entry there, so `import dsr` works on nodes
    that only have the dependencies installed. The package has no `.git`: the checkout's commit travels in the
    environment (`dsr.provenance.code_environment`), so trials on the nodes record the code they ran.
    """
    from dsr.provenance import code_environment

    return {
        "working_dir": str(Path(project_dir).resolve()),
        "excludes": list(UPLOAD_EXCLUDES),
        "env_vars": {"PYTHONUNBUFFERED": "1", **code_environment(Path(project_dir))},
    }


def in_ray_job() -> bool:
    """Whether this process is the driver of a submitted Ray job (whose runtime env already ships the project)."""
    return _JOB_CONFIG_ENV in os.environ


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


def connect(address: str, timeout_s: float = 5.0, ship_project: bool = True) -> None:
    """Join the running Ray cluster at `address`: "host:port" (GCS), "ray://host:port" (Ray Client) or "auto".

    A "host:port" is first checked to accept TCP connections, so a wrong address fails in seconds. Unless this
    process is already a Ray job's driver, the project ships with it (`project_runtime_env`): the cluster's
    nodes need not have it, and always run the code of this checkout. Raises
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
    runtime_env = project_runtime_env() if ship_project and not in_ray_job() else None
    try:
        ray.init(address=address, logging_level="WARNING", runtime_env=runtime_env)
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


def load_cluster_file(path: str | os.PathLike[str], prepared: bool = True) -> dict[str, Any]:
    """Parse a Ray cluster launcher YAML and check it as `ray up` does; returns it with Ray's defaults filled in
    (`prepared`), or as written (what `create_or_update_cluster` takes: it prepares the config itself, and
    preparing twice runs the setup commands twice).

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
    # prepare_config logs its defaults at INFO, and prints that a file (not folder) mount is not kept in sync
    # inside Docker containers (these clusters run none): keep both out of the study's output.
    quiet = {"ray.autoscaler._private.util": logging.WARNING}
    levels = {name: logging.getLogger(name).level for name in quiet}
    for name, level in quiet.items():
        logging.getLogger(name).setLevel(level)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            ready = prepare_config(copy.deepcopy(raw))
        validate_config(ready)
    except Exception as err:  # jsonschema.ValidationError, ValueError, KeyError, ...: all are a bad config here
        raise ValueError(f"cluster file {path}: fails Ray's cluster config validation: {_validation_problem(err)}") from None
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    return ready if prepared else raw


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
