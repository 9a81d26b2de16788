"""A real multi-node Ray on one machine: every node is a host in its own network and mount namespace.

Why namespaces: as soon as a Ray cluster has more than one node, Ray resolves 127.0.0.1 to the machine's own
address, so a multi-node Ray cannot live on loopback, and tests here must not use the machine's address. Each node
therefore gets its own network namespace and its own address on a private link: a bridge inside a separate
"switch" namespace joins the hosts, so the host's own network is never touched and no packet can leave.
`ray start --node-ip-address` binds every node to its namespace's address.

Each node also gets a private filesystem (`private_fs`, on by default): a mount namespace with its own /tmp (Ray's
session folder, its home $HOME=/tmp/home, any results or caches) and this checkout hidden except its virtualenv.
The nodes hold Python and the dependencies, like the nodes of cluster/aws.yaml; the project's code reaches them
only as a Ray job's working_dir, and nothing can pass between nodes through a shared disk by accident.

Other hosts can join the same network, e.g. an S3 API server (`s3_host`) that outlives a cluster:

    with private_network() as net, s3_host(net) as s3:
        with multinode_cluster(num_workers=1, network=net, env=s3.env) as cluster:
            nodes = cluster.run_python_in_head("import ray; ray.init(); print(len(ray.nodes()))")

Everything is ended by id: the processes of a host are exactly the processes in its namespace (`ip netns pids`),
so teardown sends those pids SIGTERM, then SIGKILL, and deletes the namespaces, also when start-up failed half way.
A driver (`run_in_head`) runs on the head node, in its namespaces, with `cluster.env` (the cluster's token and
`RAY_ADDRESS`); a client (`run_client`: job submission, S3) runs in the head's network namespace on this machine's
filesystem, like a laptop beside the cluster.
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
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studies.runner.runtime import DASHBOARD_PORT

REPO_ROOT = Path(__file__).resolve().parent.parent
SUBNET = "10.250.0"  # a /24 that exists only inside the namespaces this module creates
GCS_PORT = 6379
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
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        return False, "the `unshare` and `nsenter` commands (util-linux) are not installed"
    if os.geteuid() != 0:
        return False, "creating network namespaces needs root"
    probe = f"dsrprobe{os.getpid()}{secrets.token_hex(2)}"
    result = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return False, f"`ip netns add` failed: {result.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return True, ""


@dataclass
class Network:
    """A private link: a bridge in its own "switch" namespace; each host joins it by a veth pair with its own
    namespace and address. Made by `private_network()`, which deletes every host and the switch at its end."""

    tag: str
    switch_ns: str
    hosts: list[str] = field(default_factory=list)  # namespaces of the hosts still attached
    _next: int = 1

    def add_host(self, name: str) -> tuple[str, str]:
        """A new namespace joined to the bridge: (namespace, its address). Ended with `remove_host`."""
        index = self._next
        if index > 250:
            raise RuntimeError("the private network has no address left")
        self._next += 1
        ns, addr = f"{self.tag}-{name}", f"{SUBNET}.{index}"
        _ip("netns", "add", ns)
        self.hosts.append(ns)
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", self.switch_ns, "link", "add", f"p{index}", "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("-n", self.switch_ns, "link", "set", f"p{index}", "master", "br0")
        _ip("-n", self.switch_ns, "link", "set", f"p{index}", "up")
        _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        # The default route lets Ray's own address discovery (a UDP connect, which sends nothing) succeed; the
        # switch has no uplink, so nothing can leave.
        _ip("-n", ns, "route", "add", "default", "dev", "eth0")
        return ns, addr

    def remove_hosts(self, namespaces: Sequence[str], seen: set[int] | None = None) -> None:
        """End every process in these hosts by pid (SIGTERM, then SIGKILL) and delete their namespaces."""
        _end_namespaces(list(namespaces), set() if seen is None else seen)
        for ns in namespaces:
            if ns in self.hosts:
                self.hosts.remove(ns)


@contextlib.contextmanager
def private_network() -> Iterator[Network]:
    """A bridge in a fresh switch namespace; on exit every host still on it is ended and all is deleted."""
    ok, reason = namespaces_available()
    if not ok:
        raise NamespacesUnavailable(reason)
    tag = f"dsr{os.getpid() % 100000}{secrets.token_hex(2)}"
    network = Network(tag=tag, switch_ns=f"{tag}-sw")
    seen: set[int] = set()
    previous_subreaper = _set_child_subreaper(True)  # `ray start` daemonises: adopt its orphans so we can reap them
    _ip("netns", "add", network.switch_ns)
    try:
        _ip("-n", network.switch_ns, "link", "add", "br0", "type", "bridge")
        _ip("-n", network.switch_ns, "link", "set", "br0", "up")
        yield network
    finally:
        network.remove_hosts(list(network.hosts), seen)
        subprocess.run(["ip", "netns", "del", network.switch_ns], capture_output=True, check=False)
        _reap(seen, wait=2.0)
        _set_child_subreaper(previous_subreaper)


@contextlib.contextmanager
def s3_host(network: Network, port: int = 9000) -> Iterator[Any]:
    """An S3 API server (moto) on a host of its own on `network`: it outlives the clusters started beside it."""
    from s3_server import s3_server

    ns, addr = network.add_host("s3")
    try:
        with s3_server(host=addr, port=port, namespace=ns) as server:
            yield server
    finally:
        network.remove_hosts([ns])


@dataclass(frozen=True)
class ClusterHandle:
    """A running namespaced Ray cluster: its addresses and a way to run a driver inside the head's namespace."""

    address: str  # GCS address "head_ip:port", what `ray.init(address=...)` takes
    head_ip: str
    worker_ips: tuple[str, ...]
    head_namespace: str
    env: Mapping[str, str] = field(repr=False)  # environment of every node and client (auth token included)
    dashboard_url: str | None = None  # reachable from inside the head namespace only
    namespaces: tuple[str, ...] = ()  # the nodes' namespaces, head first

    def run_in_head(
        self,
        cmd: Sequence[str],
        env: Mapping[str, str] | None = None,
        timeout: float = 300.0,
        cwd: str | os.PathLike[str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `cmd` on the head node (its network and, with a private filesystem, its mount namespace: what a
        shell on the head would see) with the cluster's environment (plus `env`), and capture its output.

        A Ray driver must run here (it talks to its node's raylet through Unix sockets in the node's /tmp). On
        timeout the command's whole process group is killed and `subprocess.TimeoutExpired` is raised.
        """
        return _run_captured(self._on_head(cmd, cwd), {**self.env, "RAY_ADDRESS": self.address, **(env or {})},
                             timeout, None)

    def run_python_in_head(
        self,
        code: str,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        timeout: float = 300.0,
        cwd: str | os.PathLike[str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a Python snippet (this interpreter, `python -c code args...`) as a driver on the head node."""
        return self.run_in_head([sys.executable, "-c", code, *args], env=env, timeout=timeout, cwd=cwd)

    def run_client(
        self,
        cmd: Sequence[str],
        env: Mapping[str, str] | None = None,
        timeout: float = 300.0,
        cwd: str | os.PathLike[str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `cmd` as a client beside the cluster: in the head's network namespace (so the dashboard and the
        other hosts are reachable) but on this machine's filesystem, like a laptop that submits jobs."""
        return _run_captured(["ip", "netns", "exec", self.head_namespace, *cmd], self._client_env(env), timeout,
                             cwd)

    def popen_client(self, cmd: Sequence[str], stdout: Any, stderr: Any, env: Mapping[str, str] | None = None,
                     cwd: str | os.PathLike[str] | None = None) -> subprocess.Popen:
        """`run_client` in the background (its own session; end it by its pid)."""
        return subprocess.Popen(["ip", "netns", "exec", self.head_namespace, *cmd], env=self._client_env(env),
                                cwd=cwd, stdout=stdout, stderr=stderr, start_new_session=True)

    def kill_raylet(self, node: int) -> int:
        """SIGKILL the raylet of node `node` (0 is the head): the node is lost, as when a machine disappears.
        Returns the raylet's pid."""
        import psutil

        for pid in _netns_pids(self.namespaces[node]):
            with contextlib.suppress(psutil.Error):
                if psutil.Process(pid).name() == "raylet":
                    os.kill(pid, signal.SIGKILL)
                    return pid
        raise RuntimeError(f"no raylet runs in {self.namespaces[node]}")

    def _on_head(self, cmd: Sequence[str], cwd: str | os.PathLike[str] | None = None) -> list[str]:
        """`cmd` entered into the namespaces of the head's GCS server (network, and mount if private), started in
        `cwd` (a folder as the head sees it; default /tmp)."""
        import psutil

        for pid in _netns_pids(self.head_namespace):
            with contextlib.suppress(psutil.Error):
                if psutil.Process(pid).name() == "gcs_server":
                    return ["nsenter", "--target", str(pid), "--net", "--mount", f"--wd={cwd or '/tmp'}", "--", *cmd]
        raise RuntimeError(f"no gcs_server runs in {self.head_namespace}")

    def _client_env(self, env: Mapping[str, str] | None) -> dict[str, str]:
        client = {k: v for k, v in self.env.items() if k not in _NODE_ONLY_ENV}
        client.update({"RAY_ADDRESS": self.address, **{k: os.environ[k] for k in _NODE_ONLY_ENV if k in os.environ}})
        return {**client, **(env or {})}


@contextlib.contextmanager
def multinode_cluster(
    num_workers: int = 1,
    cpus_per_node: int = 1,
    include_dashboard: bool = False,
    object_store_mb: int = 100,
    env: Mapping[str, str] | None = None,
    start_timeout: float = 120.0,
    network: Network | None = None,
    private_fs: bool = True,
) -> Iterator[ClusterHandle]:
    """Start a head and `num_workers` worker nodes, each in its own namespaces; tear all down on exit.

    Every node gets `cpus_per_node` CPUs and no GPU. Token authentication is on with a fresh token that every
    node and `ClusterHandle.run_in_head` share. `env` is added to every node's environment. With `private_fs`
    (default) each node has its own /tmp and home and does not see this checkout (only its virtualenv); without
    it, the repository root is put on PYTHONPATH instead. On `network` (default: a private network of its own)
    the nodes join hosts started beside them, and only the nodes are ended at exit.

    Raises NamespacesUnavailable when namespaces cannot be created, ValueError for a bad size, RuntimeError when
    a node does not start (with the tail of its `ray start` output).
    """
    if num_workers < 1 or num_workers > 200:
        raise ValueError(f"num_workers must be in [1, 200], got {num_workers}")
    if cpus_per_node < 1:
        raise ValueError(f"cpus_per_node must be >= 1, got {cpus_per_node}")
    if object_store_mb < 80:
        raise ValueError(f"object_store_mb must be >= 80 (Ray's minimum is 75 MB), got {object_store_mb}")
    if network is None:
        with private_network() as own, multinode_cluster(num_workers, cpus_per_node, include_dashboard,
                                                         object_store_mb, env, start_timeout, own,
                                                         private_fs) as handle:
            yield handle
        return

    run = f"c{secrets.token_hex(2)}"
    temp_root = f"/tmp/{network.tag}-{run}"  # short: Ray's socket paths must stay < 108
    node_env = _node_env(env, private_fs)
    nodes: list[str] = []
    seen: set[int] = set()
    try:
        node_ns, node_ip = [], []
        for i in range(num_workers + 1):
            ns, addr = network.add_host(f"{run}n{i}")
            nodes.append(ns)
            node_ns.append(ns)
            node_ip.append(addr)
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
            f"--temp-dir={temp_root}/n0",
            f"--include-dashboard={'true' if include_dashboard else 'false'}",
        ]
        if include_dashboard:
            head += [f"--dashboard-host={node_ip[0]}", f"--dashboard-port={DASHBOARD_PORT}"]
        _ray_start(ray_bin, node_ns[0], head + common, node_env, start_timeout, private_fs, f"{temp_root}/n0")
        address = f"{node_ip[0]}:{GCS_PORT}"
        for i in range(1, num_workers + 1):
            worker = [f"--address={address}", f"--node-ip-address={node_ip[i]}", f"--temp-dir={temp_root}/n{i}"]
            _ray_start(ray_bin, node_ns[i], worker + common, node_env, start_timeout, private_fs,
                       f"{temp_root}/n{i}")
        handle = ClusterHandle(
            address=address,
            head_ip=node_ip[0],
            worker_ips=tuple(node_ip[1:]),
            head_namespace=node_ns[0],
            env=node_env,
            dashboard_url=f"http://{node_ip[0]}:{DASHBOARD_PORT}" if include_dashboard else None,
            namespaces=tuple(node_ns),
        )
        waited = handle.run_python_in_head(_WAIT_FOR_NODES, [str(num_workers + 1), str(start_timeout)],
                                           timeout=start_timeout + 30)
        if waited.returncode != 0:
            raise RuntimeError(f"namespaced Ray cluster did not come up: {_tail(waited.stderr)}")
        yield handle
    finally:
        network.remove_hosts(nodes, seen)
        _reap(seen, wait=2.0)
        shutil.rmtree(temp_root, ignore_errors=True)  # only without private_fs is anything left on this disk


# Node-side values that a client (run_client) does not take: it runs on this machine's filesystem.
_NODE_ONLY_ENV = ("HOME", "PYTHONPATH")
# Run inside a node's new mount namespace before `ray start`: a private /tmp and home, this checkout hidden except
# its virtualenv (kept at its own path, which the interpreter and `ray` are started from).
_PRIVATE_FS = r"""
set -e
keep=/run/dsr-venv-$$
mkdir -p "$keep"
mount --bind "$DSR_REPO/.venv" "$keep"
mount -t tmpfs -o mode=1777,size=4g dsr-node-tmp /tmp
mkdir -p "$DSR_REPO" 2>/dev/null || true
mount -t tmpfs -o size=16m dsr-hidden-checkout "$DSR_REPO"
mkdir -p "$DSR_REPO/.venv" "$HOME" "$DSR_TEMP_DIR"
mount --bind "$keep" "$DSR_REPO/.venv"
umount "$keep"
rmdir "$keep" 2>/dev/null || true
exec "$@"
"""


def _node_env(extra: Mapping[str, str] | None, private_fs: bool) -> dict[str, str]:
    """The environment of every node: the caller's, minus what would redirect Ray, plus the token; with a
    private filesystem a home in the node's own /tmp, else the repository on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
    if private_fs:
        env.pop("PYTHONPATH", None)
        env.update(HOME="/tmp/home", DSR_REPO=str(REPO_ROOT))
    else:
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=secrets.token_hex(32),
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="1",  # a multi-node Ray must not pin itself to loopback
        RAY_USAGE_STATS_ENABLED="0",
        # Ray's memory monitor kills tasks when the *machine* is above 95% memory; on a shared machine that is
        # often someone else's doing, so the test cluster leaves out-of-memory handling to the kernel.
        RAY_memory_monitor_refresh_ms="0",
        # the environment's bin first, as cluster/aws.yaml activates its venv: `python` in a job is that Python
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)]),
        OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
    )
    env.update(extra or {})
    return env


def _ray_start(ray_bin: str, ns: str, args: list[str], env: Mapping[str, str], timeout: float,
               private_fs: bool = False, temp_dir: str = "") -> None:
    """`ray start ARGS` inside namespace `ns` (and a private mount namespace); it daemonises, leaving the node's
    processes in that namespace."""
    start = [ray_bin, "start", *args]
    if private_fs:
        start = ["unshare", "--mount", "--propagation", "private", "sh", "-c", _PRIVATE_FS, "node", *start]
        env = {**env, "DSR_TEMP_DIR": temp_dir}
    try:
        result = _run_captured(["ip", "netns", "exec", ns, *start], env, timeout, None)
    except subprocess.TimeoutExpired as err:
        raise RuntimeError(f"`ray start` in namespace {ns} did not return within {timeout:.0f} s") from err
    if result.returncode != 0:
        raise RuntimeError(f"`ray start` in namespace {ns} failed: {_tail(result.stdout + result.stderr)}")


def _end_namespaces(namespaces: list[str], seen: set[int]) -> None:
    """End every process in `namespaces` by pid (SIGTERM, then SIGKILL) and delete the namespaces.

    Every pid met is added to `seen`, so the caller can reap the ones that became its children.
    """

    def alive() -> list[int]:
        pids = [pid for ns in namespaces for pid in _netns_pids(ns)]
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
    for ns in namespaces:
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
