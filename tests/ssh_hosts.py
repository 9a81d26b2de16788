"""SSH hosts for tests: machines a Ray cluster launcher file (`provider: local`) can reach, on one real machine.

Each host is a network namespace on a `namespaced_cluster.Network` (its own address, nothing leaves the private
link) with its own mount and PID namespaces, running Debian's OpenSSH server (`/usr/sbin/sshd`) as its first
process. What a login on the host sees:
- its own /tmp and its own home (/root, the SSH user is root), both empty at start apart from the shell's
  start-up files (/etc/skel) and the test's public key in ~/.ssh/authorized_keys;
- its own processes only (/proc of its PID namespace): `ray stop` in a cluster file ends that host's Ray, never
  another host's or this machine's;
- this checkout hidden; only the virtualenv (and the interpreter it links to) stays at its own path, as a lab
  machine that has the dependencies but not the project;
- the variables given as `env` in every login (sshd's `SetEnv`: e.g. the S3 endpoint and credentials a lab's
  machines would have configured).

A client (`run_client`/`popen_client`) is a laptop beside the hosts: a namespace of its own on the same network,
this machine's filesystem, except that /tmp is a folder of the test's (`client_tmp`, so the launcher's state files,
SSH control sockets and the Ray auth token in HOME=/tmp/home stay in the test).

Debian's sshd wants its privilege separation folder /run/sshd: a host creates it on this machine if missing (empty;
the package's own place for it) and mounts a private tmpfs there. Needs root, iproute2, util-linux, openssh-server
and rsync (`tests/setup_test_hosts.sh` installs the last two where they are missing). Every process is ended by pid
and every namespace deleted when the `ssh_hosts` block ends (through the network's `remove_hosts`), also after a
failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from namespaced_cluster import REPO_ROOT, Network, namespaces_available

SSHD = "/usr/sbin/sshd"
SSH_USER = "root"
# Run in a host's new mount and PID namespaces (`unshare --mount --pid --fork --mount-proc`), then becomes sshd.
# $DSR_HOST_DIR (on this machine's disk) holds sshd_config, the host key and authorized_keys; $DSR_KEEP lists the
# paths (colon-separated) that stay visible where they are once /tmp, /root and the checkout are replaced.
_HOST_INIT = r"""
set -e
mkdir -p /run/sshd
mount -t tmpfs -o mode=755,size=16m dsr-host-run /run/sshd
cp -r "$DSR_HOST_DIR" /run/sshd/host
chmod 600 /run/sshd/host/ssh_host_ed25519_key
i=0
IFS=:
for path in $DSR_KEEP; do
    i=$((i + 1)); mkdir -p "/run/sshd/keep/$i"; mount --bind "$path" "/run/sshd/keep/$i"
done
mount -t tmpfs -o mode=1777,size=4g dsr-host-tmp /tmp
mount -t tmpfs -o mode=700,size=1g dsr-host-home /root
mkdir -p "$DSR_REPO" 2>/dev/null || true
mount -t tmpfs -o size=16m dsr-hidden-checkout "$DSR_REPO"
i=0
for path in $DSR_KEEP; do
    i=$((i + 1)); mkdir -p "$path"; mount --bind "/run/sshd/keep/$i" "$path"; umount "/run/sshd/keep/$i"
done
unset IFS
cp /etc/skel/.bashrc /etc/skel/.profile /root/ 2>/dev/null || true
mkdir -p -m 700 /root/.ssh
cp /run/sshd/host/authorized_keys /root/.ssh/authorized_keys
chmod 600 /root/.ssh/authorized_keys
cd /
exec "$SSHD_BIN" -D -e -f /run/sshd/host/sshd_config
"""
# Run in the client's new mount namespace: /tmp is the test's folder $DSR_CLIENT_TMP, with the paths under /tmp
# in $DSR_CLIENT_KEEP (colon-separated: a checkout or virtualenv cloned under /tmp) bound where they were.
_CLIENT_INIT = """set -e
IFS=:
for path in $DSR_CLIENT_KEEP; do
    mkdir -p "$DSR_CLIENT_TMP${path#/tmp}"; mount --bind "$path" "$DSR_CLIENT_TMP${path#/tmp}"
done
unset IFS
mount --rbind "$DSR_CLIENT_TMP" /tmp
cd "$DSR_CLIENT_CWD"
exec "$@"
"""


def ssh_hosts_available() -> tuple[bool, str]:
    """Whether SSH test hosts can be made here, and if not, why (a skip reason)."""
    ok, reason = namespaces_available()
    if not ok:
        return False, reason
    for tool in (SSHD, shutil.which("ssh"), shutil.which("ssh-keygen"), shutil.which("rsync")):
        if not tool or not os.path.exists(tool):
            return False, ("openssh-server, openssh-client and rsync are needed (`tests/setup_test_hosts.sh`, run "
                           "by `make test`, installs them)")
    return True, ""


@dataclass
class SSHHosts:
    """Running SSH hosts and the client beside them."""

    network: Network
    addresses: tuple[str, ...]  # one per host, in the order asked for
    namespaces: tuple[str, ...]
    client_namespace: str
    client_tmp: Path  # the client's /tmp, seen from this machine
    private_key: str  # the key's path as the client sees it (under /tmp/home/.ssh)
    logs: tuple[Path, ...] = field(default=())  # each host's sshd log

    def client_path(self, path: Path) -> str:
        """Where a file under `client_tmp` lies for the client."""
        return "/tmp/" + Path(path).relative_to(self.client_tmp).as_posix()

    def client_argv(self, cmd: Sequence[str], cwd: str | os.PathLike[str] = REPO_ROOT) -> list[str]:
        """`cmd` as run by the client: its network namespace, its /tmp, started in `cwd`."""
        return ["ip", "netns", "exec", self.client_namespace, "unshare", "--mount", "--propagation", "private",
                "sh", "-c", _CLIENT_INIT, "client", *cmd]

    def client_env(self, env: Mapping[str, str] | None = None, cwd: str | os.PathLike[str] = REPO_ROOT
                   ) -> dict[str, str]:
        """The client's environment: this process's, with HOME in its /tmp and nothing that points Ray elsewhere."""
        drop = ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE")
        base = {k: v for k, v in os.environ.items() if k not in drop}
        return {**base, "HOME": "/tmp/home", "DSR_CLIENT_TMP": str(self.client_tmp), "DSR_CLIENT_CWD": str(cwd),
                "DSR_CLIENT_KEEP": ":".join(_client_kept_paths()), **(env or {})}

    def popen_client(self, cmd: Sequence[str], stdout: Any, env: Mapping[str, str] | None = None,
                     cwd: str | os.PathLike[str] = REPO_ROOT) -> subprocess.Popen:
        """Start `cmd` as the client (its own session; its output, stderr included, to `stdout`)."""
        return subprocess.Popen(self.client_argv(cmd), env=self.client_env(env, cwd), stdout=stdout,
                                stderr=subprocess.STDOUT, start_new_session=True)

    def run_client(self, cmd: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 300.0,
                   cwd: str | os.PathLike[str] = REPO_ROOT) -> subprocess.CompletedProcess[str]:
        """Run `cmd` as the client and capture its output."""
        return subprocess.run(self.client_argv(cmd), env=self.client_env(env, cwd), capture_output=True, text=True,
                              timeout=timeout, check=False)

    def processes(self, host: int) -> list[str]:
        """The command lines of every process on host `host` (from this machine: its network namespace)."""
        import psutil

        from namespaced_cluster import _netns_pids

        found = []
        for pid in _netns_pids(self.namespaces[host]):
            with contextlib.suppress(psutil.Error):
                found.append(" ".join(psutil.Process(pid).cmdline()))
        return found


@contextlib.contextmanager
def ssh_hosts(network: Network, count: int, workdir: Path, env: Mapping[str, str] | None = None,
              start_timeout: float = 30.0) -> Iterator[SSHHosts]:
    """`count` SSH hosts and a client on `network`; files (keys, configs, logs, the client's /tmp) under
    `workdir`. Everything they started is ended, and their namespaces deleted, on exit."""
    ok, reason = ssh_hosts_available()
    if not ok:
        raise RuntimeError(f"SSH test hosts cannot be made here: {reason}")
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    client_tmp = workdir / "client-tmp"
    key_dir = client_tmp / "home" / ".ssh"
    key_dir.mkdir(parents=True, mode=0o700)
    client_tmp.chmod(0o1777)
    _keygen(key_dir / "id_ed25519")
    host_dir = workdir / "host"
    host_dir.mkdir()
    _keygen(host_dir / "ssh_host_ed25519_key")
    shutil.copy(key_dir / "id_ed25519.pub", host_dir / "authorized_keys")
    keep = _kept_paths()
    started: list[str] = []
    procs: list[subprocess.Popen] = []
    try:
        client_ns, _ = network.add_host("laptop")
        started.append(client_ns)
        namespaces, addresses, logs = [], [], []
        for i in range(count):
            ns, addr = network.add_host(f"ssh{i}")
            started.append(ns)
            config = host_dir.parent / f"host{i}"
            shutil.copytree(host_dir, config)
            (config / "sshd_config").write_text(_sshd_config(addr, env or {}))
            log = workdir / f"sshd{i}.log"
            with open(log, "w") as out:
                procs.append(subprocess.Popen(
                    ["ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private", "--pid", "--fork",
                     "--mount-proc", "sh", "-c", _HOST_INIT],
                    env={"PATH": os.environ.get("PATH", os.defpath), "DSR_HOST_DIR": str(config),
                         "DSR_KEEP": ":".join(keep), "DSR_REPO": str(REPO_ROOT), "SSHD_BIN": SSHD},
                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
            namespaces.append(ns)
            addresses.append(addr)
            logs.append(log)
        hosts = SSHHosts(network=network, addresses=tuple(addresses), namespaces=tuple(namespaces),
                         client_namespace=client_ns, client_tmp=client_tmp,
                         private_key="/tmp/home/.ssh/id_ed25519", logs=tuple(logs))
        for i, addr in enumerate(addresses):
            _wait_for_ssh(hosts, i, procs[i], start_timeout)
        yield hosts
    finally:
        network.remove_hosts(started)
        for proc in procs:  # the unshare processes: ended with their namespace's processes, reaped here
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


def _sshd_config(address: str, env: Mapping[str, str]) -> str:
    """An sshd that accepts root with the test's key only, on `address`, and sets `env` in every login."""
    lines = [
        f"ListenAddress {address}",
        "Port 22",
        "HostKey /run/sshd/host/ssh_host_ed25519_key",
        "PidFile none",
        "UsePAM no",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "AuthorizedKeysFile .ssh/authorized_keys",
        "AllowTcpForwarding yes",
        "X11Forwarding no",
        "PrintMotd no",
        "MaxStartups 100",
        "MaxSessions 100",
        "Subsystem sftp internal-sftp",
        "LogLevel ERROR",
    ]
    if env:
        lines.append("SetEnv " + " ".join(f'{key}="{value}"' for key, value in env.items()))
    return "\n".join(lines) + "\n"


def _kept_paths() -> list[str]:
    """Paths that stay visible on the hosts where /tmp, /root or the checkout would hide them: this virtualenv and
    the interpreter installation it links to (e.g. pyenv's, under /root)."""
    hidden = ("/tmp/", "/root/", f"{REPO_ROOT}/")
    paths = [p for p in dict.fromkeys([sys.prefix, os.path.realpath(sys.base_prefix)]) if p.startswith(hidden)]
    for path in paths:
        if ":" in path:
            raise RuntimeError(f"cannot keep {path} visible on the SSH test hosts: it contains ':'")
    return paths


def _client_kept_paths() -> list[str]:
    """The checkout and the interpreter, where they live under /tmp (e.g. a clean clone in `mktemp -d`): the
    client's /tmp is the test's folder, so they stay visible only when bound back in (outermost paths only)."""
    candidates = sorted({str(REPO_ROOT), sys.prefix, os.path.realpath(sys.base_prefix)})
    under_tmp = [p for p in candidates if p.startswith("/tmp/")]
    kept = [p for p in under_tmp if not any(p.startswith(f"{other}/") for other in under_tmp)]
    for path in kept:
        if ":" in path:
            raise RuntimeError(f"cannot keep {path} visible to the SSH test client: it contains ':'")
    return kept


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "dsr-test", "-f", str(path)], check=True,
                   capture_output=True)


def _wait_for_ssh(hosts: SSHHosts, index: int, proc: subprocess.Popen, timeout: float) -> None:
    """Poll until a login on host `index` runs a command (sshd is up and takes the key)."""
    argv = ["ssh", "-i", hosts.private_key, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=2", "-o", "LogLevel=ERROR",
            f"{SSH_USER}@{hosts.addresses[index]}", "true"]
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd on {hosts.addresses[index]} exited ({proc.returncode}): "
                               f"{hosts.logs[index].read_text()[-1500:]}")
        result = hosts.run_client(argv, timeout=30)
        if result.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"no SSH login on {hosts.addresses[index]} within {timeout:.0f} s: "
                               f"{result.stderr.strip()[-500:]} {hosts.logs[index].read_text()[-1000:]}")
        time.sleep(0.3)
