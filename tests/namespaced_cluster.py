"""A real multi-node Ray on one machine: every node is a host in its own network namespace.

Why namespaces: as soon as a Ray cluster has more than one node, Ray resolves 127.0.0.1 to the machine's own
address, so a multi-node Ray cannot live on loopback, and tests here must not use the machine's address. Each node
therefore gets its own network namespace and its own address on a private link: a bridge inside a separate
"switch" namespace joins the nodes, so the host's own network is never touched and no packet can leave.
`ray start --node-ip-address` binds every node to its namespace's address.

Everything is ended by id: the processes of a node are exactly the processes in its namespace (`ip netns pids`),
so teardown sends those pids SIGTERM, then SIGKILL, and deletes the namespaces, also when start-up failed half way.

    with multinode_cluster(num_workers=1, cpus_per_node=1) as cluster:
        result = cluster.run_python_in_head("import ray; ray.init(); print(len(ray.nodes()))")

The driver runs inside the head's namespace with `cluster.env` (the cluster's token and `RAY_ADDRESS`), so a
script that calls `ray.init()` or `ray.init(address=os.environ["RAY_ADDRESS"])` joins the cluster.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SUBNET = "10.250.0"  # a /24 that exists only inside the namespaces this module creates
GCS_PORT = 6379
DASHBOARD_PORT = 8265
# Variables of the caller that would point the cluster's processes elsewhere or change how they bind.
_DROPPED_ENV = (
    "RAY_ADDRESS",
    "RAY_API_SERVER_ADDRESS",
    "RAY_AUTH_MODE",
    "RAY_AUTH_TOKEN",
    "RAY_AUTH_TOKEN_PATH",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER",
)
_WAIT_FOR_NODES = """
import sys, time, ray
want, deadline = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])
ray.init(logging_level="ERROR", log_to_driver=False)
while True:
    alive = sum(1 for node in ray.nodes() if node["Alive"])
    if alive >= want:
        break
    if time.monotonic() > deadline:
        sys.exit(f"only {alive} of {want} Ray nodes joined the cluster")
    time.sleep(0.5)
ray.shutdown()
"""


class NamespacesUnavailable(RuntimeError):
    """Network namespaces cannot be created here (not root, no `ip`, or the kernel refuses)."""


def namespaces_available() -> tuple[bool, str]:
    """Whether this process can create network namespaces, and if not, why (for a test's skip reason)."""
    if shutil.which("ip") is None:
        return False, "the `ip` command (iproute2) is not installed"
    if os.geteuid() != 0:
        return False, "creating network namespaces needs root"
    probe = f"dsrprobe{os.getpid()}{secrets.token_hex(2)}"
    result = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return False, f"`ip netns add` failed: {result.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return True, ""


@dataclass(frozen=True)
class ClusterHandle:
    """A running namespaced Ray cluster: its addresses and a way to run a driver inside the head's namespace."""

    address: str  # GCS address "head_ip:port", what `ray.init(address=...)` takes
    head_ip: str
    worker_ips: tuple[str, ...]
    head_namespace: str
    env: Mapping[str, str] = field(repr=False)  # environment of every node and client (auth token included)
    dashboard_url: str | None = None  # reachable from inside the head namespace only

    def run_in_head(
        self,
        cmd: Sequence[str],
        env: Mapping[str, str] | None = None,
        timeout: float = 300.0,
        cwd: str | os.PathLike[str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `cmd` inside the head's namespace with the cluster's environment (plus `env`) and capture its output.

        On timeout the command's whole process group is killed and `subprocess.TimeoutExpired` is raised.
        """
        full_env = {**self.env, "RAY_ADDRESS": self.address, **(env or {})}
        return _run_captured(["ip", "netns", "exec", self.head_namespace, *cmd], full_env, timeout, cwd)

    def run_python_in_head(
        self,
        code: str,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        timeout: float = 300.0,
        cwd: str | os.PathLike[str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a Python snippet (this interpreter, `python -c code args...`) as a driver in the head's namespace."""
        return self.run_in_head([sys.executable, "-c", code, *args], env=env, timeout=timeout, cwd=cwd)


@contextlib.contextmanager
def multinode_cluster(
    num_workers: int = 1,
    cpus_per_node: int = 1,
    include_dashboard: bool = False,
    object_store_mb: int = 100,
    env: Mapping[str, str] | None = None,
    start_timeout: float = 120.0,
) -> Iterator[ClusterHandle]:
    """Start a head and `num_workers` worker nodes, each in its own network namespace; tear all down on exit.

    Every node gets `cpus_per_node` CPUs and no GPU. Token authentication is on with a fresh token that every
    node and `ClusterHandle.run_in_head` share. `env` is added to every node's environment (the repository root is
    put on PYTHONPATH, so Ray workers can import `dsr`, `studies` and `cluster`).

    Raises NamespacesUnavailable when namespaces cannot be created, ValueError for a bad size, RuntimeError when
    a node does not start (with the tail of its `ray start` output).
    """
    if num_workers < 1 or num_workers > 200:
        raise ValueError(f"num_workers must be in [1, 200], got {num_workers}")
    if cpus_per_node < 1:
        raise ValueError(f"cpus_per_node must be >= 1, got {cpus_per_node}")
    if object_store_mb < 80:
        raise ValueError(f"object_store_mb must be >= 80 (Ray's minimum is 75 MB), got {object_store_mb}")
    ok, reason = namespaces_available()
    if not ok:
        raise NamespacesUnavailable(reason)

    tag = f"dsr{os.getpid() % 100000}{secrets.token_hex(2)}"
    switch_ns = f"{tag}-sw"
    node_ns = [f"{tag}-n{i}" for i in range(num_workers + 1)]
    node_ip = [f"{SUBNET}.{i + 1}" for i in range(num_workers + 1)]
    temp_root = Path(tempfile.mkdtemp(prefix=f"{tag}-", dir="/tmp"))  # short: Ray's socket paths must stay < 108
    created: list[str] = []
    node_env = _node_env(env)
    seen: set[int] = set()
    previous_subreaper = _set_child_subreaper(True)  # `ray start` daemonises: adopt its orphans so we can reap them
    try:
        _create_network(switch_ns, node_ns, node_ip, created)
        ray_bin = _ray_executable()
        common = [
            f"--num-cpus={cpus_per_node}",
            "--num-gpus=0",
            f"--object-store-memory={object_store_mb * 1024 * 1024}",
            "--disable-usage-stats",
        ]
        head = [
            "--head",
            f"--node-ip-address={node_ip[0]}",
            f"--port={GCS_PORT}",
            f"--temp-dir={temp_root / 'n0'}",
            f"--include-dashboard={'true' if include_dashboard else 'false'}",
        ]
        if include_dashboard:
            head += [f"--dashboard-host={node_ip[0]}", f"--dashboard-port={DASHBOARD_PORT}"]
        _ray_start(ray_bin, node_ns[0], head + common, node_env, start_timeout)
        address = f"{node_ip[0]}:{GCS_PORT}"
        for i in range(1, num_workers + 1):
            worker = [f"--address={address}", f"--node-ip-address={node_ip[i]}", f"--temp-dir={temp_root / f'n{i}'}"]
            _ray_start(ray_bin, node_ns[i], worker + common, node_env, start_timeout)
        handle = ClusterHandle(
            address=address,
            head_ip=node_ip[0],
            worker_ips=tuple(node_ip[1:]),
            head_namespace=node_ns[0],
            env=node_env,
            dashboard_url=f"http://{node_ip[0]}:{DASHBOARD_PORT}" if include_dashboard else None,
        )
        waited = handle.run_python_in_head(_WAIT_FOR_NODES, [str(num_workers + 1), str(start_timeout)],
                                           timeout=start_timeout + 30)
        if waited.returncode != 0:
            raise RuntimeError(f"namespaced Ray cluster did not come up: {_tail(waited.stderr)}")
        yield handle
    finally:
        _teardown(created, switch_ns, seen)
        _reap(seen, wait=2.0)
        _set_child_subreaper(previous_subreaper)
        shutil.rmtree(temp_root, ignore_errors=True)


def _node_env(extra: Mapping[str, str] | None) -> dict[str, str]:
    """The environment of every node and client: the caller's, minus what would redirect Ray, plus the token."""
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
    pythonpath = [str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=secrets.token_hex(32),
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="1",  # a multi-node Ray must not pin itself to loopback
        RAY_USAGE_STATS_ENABLED="0",
        # Ray's memory monitor kills tasks when the *machine* is above 95% memory; on a shared machine that is
        # often someone else's doing, so the test cluster leaves out-of-memory handling to the kernel.
        RAY_memory_monitor_refresh_ms="0",
        PYTHONPATH=os.pathsep.join(pythonpath),
        # the environment's bin first, as cluster/aws.yaml activates its venv: `python` in a job is that Python
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)]),
        OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
    )
    env.update(extra or {})
    return env


def _create_network(switch_ns: str, node_ns: list[str], node_ip: list[str], created: list[str]) -> None:
    """A bridge in `switch_ns`; each node namespace joins it by a veth pair, with its address and a default route.

    The default route lets Ray's own address discovery (a UDP connect, which sends nothing) succeed; the switch
    namespace has no uplink, so nothing can leave. Every namespace made is appended to `created` at once.
    """
    _ip("netns", "add", switch_ns)
    created.append(switch_ns)
    _ip("-n", switch_ns, "link", "add", "br0", "type", "bridge")
    _ip("-n", switch_ns, "link", "set", "br0", "up")
    for i, (ns, addr) in enumerate(zip(node_ns, node_ip)):
        _ip("netns", "add", ns)
        created.append(ns)
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", switch_ns, "link", "add", f"p{i}", "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("-n", switch_ns, "link", "set", f"p{i}", "master", "br0")
        _ip("-n", switch_ns, "link", "set", f"p{i}", "up")
        _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "route", "add", "default", "dev", "eth0")


def _ray_start(ray_bin: str, ns: str, args: list[str], env: Mapping[str, str], timeout: float) -> None:
    """`ray start ARGS` inside namespace `ns`; it daemonises, leaving the node's processes in that namespace."""
    try:
        result = _run_captured(["ip", "netns", "exec", ns, ray_bin, "start", *args], env, timeout, None)
    except subprocess.TimeoutExpired as err:
        raise RuntimeError(f"`ray start` in namespace {ns} did not return within {timeout:.0f} s") from err
    if result.returncode != 0:
        raise RuntimeError(f"`ray start` in namespace {ns} failed: {_tail(result.stdout + result.stderr)}")


def _teardown(namespaces: list[str], switch_ns: str, seen: set[int]) -> None:
    """End every process in the node namespaces by pid (SIGTERM, then SIGKILL) and delete all namespaces.

    Every pid met is added to `seen`, so the caller can reap the ones that became its children.
    """
    nodes = [ns for ns in namespaces if ns != switch_ns]

    def alive() -> list[int]:
        pids = [pid for ns in nodes for pid in _netns_pids(ns)]
        seen.update(pids)
        _reap(seen)  # a killed child of ours stays listed until reaped
        return pids

    _signal_pids(alive(), signal.SIGTERM)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and alive():
        time.sleep(0.2)
    for _ in range(50):  # gcs_server and raylet may ignore SIGTERM while busy
        left = alive()
        if not left:
            break
        _signal_pids(left, signal.SIGKILL)
        time.sleep(0.1)
    for ns in reversed(namespaces):  # nodes first, the switch last
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def _netns_pids(ns: str) -> list[int]:
    """Pids of the processes living in network namespace `ns` (empty if it does not exist)."""
    result = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False)
    return [int(tok) for tok in result.stdout.split() if tok.isdigit()] if result.returncode == 0 else []


def _reap(pids: set[int], wait: float = 0.0) -> None:
    """Collect the exit status of those `pids` that are our exited children (no zombies left behind).

    Pids that are not our children are dropped; with `wait` > 0, retry that long for children still exiting.
    """
    deadline = time.monotonic() + wait
    while True:
        for pid in list(pids):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # not (or no longer) our child
                done = pid
            if done:
                pids.discard(pid)
        if not pids or time.monotonic() >= deadline:
            return
        time.sleep(0.05)


_PR_SET_CHILD_SUBREAPER, _PR_GET_CHILD_SUBREAPER = 36, 37


def _set_child_subreaper(on: bool) -> bool:
    """Make this process the reaper of its orphaned descendants (Linux prctl); returns the previous setting."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        previous = ctypes.c_int(0)
        libc.prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(previous), 0, 0, 0)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0)
        return bool(previous.value)
    except (OSError, AttributeError):  # not Linux: orphans go to init as usual
        return False


def _signal_pids(pids: Sequence[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _run_captured(
    cmd: Sequence[str], env: Mapping[str, str], timeout: float, cwd: str | os.PathLike[str] | None
) -> subprocess.CompletedProcess[str]:
    """Run `cmd` in a new session, capture stdout/stderr; on timeout kill its process group and re-raise."""
    proc = subprocess.Popen(
        list(cmd), env=dict(env), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise subprocess.TimeoutExpired(proc.args, timeout, output=out, stderr=err) from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {result.stderr.strip()}")


def _ray_executable() -> str:
    """The `ray` CLI of this interpreter's environment (so nodes run the same Ray as the driver)."""
    beside = Path(sys.executable).parent / "ray"
    found = str(beside) if beside.exists() else shutil.which("ray")
    if not found:
        raise RuntimeError("the `ray` command was not found beside this Python or on PATH")
    return found


def _tail(text: str, lines: int = 15) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip())
