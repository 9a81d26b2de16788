"""`--cluster FILE`: run a study on a Ray cluster launcher cluster from this machine, through Ray's Python APIs.

Everything is checked locally before anything starts (the cluster file with Ray's own validation, the storage
and data every node must reach), then, in order:
1. the Ray auth token exists (`ray get-auth-token --generate`; the cluster file mounts it on every node);
2. the cluster is started or reused without restarting Ray (`ray.autoscaler.sdk.create_or_update_cluster`);
3. an SSH tunnel to the head's loopback-only dashboard (`ray dashboard --port P FILE`, in the background);
4. the study is submitted as a Ray job (`JobSubmissionClient.submit_job`), the project shipped as its
   working_dir (the one way the code reaches the nodes), and its output followed (`tail_job_logs`);
5. with `--down` the cluster is torn down (`ray.autoscaler.sdk.teardown_cluster`); otherwise how to do it is
   printed.
`--dry-run` does the checks, builds the exact package Ray would upload (Ray's own packaging function), prints the
steps above as commands and then every file of the package, one per line, and contacts nothing.

Results never land on the head's disk: storage is a URI (s3://, gs://) or a path that every node mounts, so the
study's trials, checkpoints and report are written there and read from there (`python -m reports s3://...`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studies.runner.preflight import check_remote_inputs
from studies.runner.runtime import DASHBOARD_PORT, LOOPBACK, PROJECT_DIR, load_cluster_file, project_runtime_env
from studies.runner.storage import SHARED_STORAGE_HELP, is_remote, is_uri

# Options of the local command line that mean nothing on the cluster (or are set there by the launcher).
LOCAL_ONLY = {"--cluster": True, "--dry-run": False, "--down": False, "--storage": True, "--address": True,
              "--attach": True}
# follow_job's outcomes that are not the job's own: it may still be running, so nothing is torn down.
INTERRUPTED, LOST = 130, 3


@dataclass(frozen=True)
class ClusterRun:
    """Everything one `--cluster` run does, decided and checked locally before anything starts."""

    cluster_file: Path
    config: dict[str, Any] = field(repr=False)  # as written (Ray prepares it once, in `ray up`), validated by
    # Ray, local file_mounts made absolute
    entrypoint: tuple[str, ...]  # the study's command line on the head
    storage: str
    experiment: str  # STORAGE/NAME
    runtime_env: dict[str, Any] = field(repr=False)
    submission_id: str
    down: bool
    min_nodes: int = 1  # the head and the workers the file keeps up (min_workers): all hosts of a `local` file
    placement_timeout_min: float = 15.0  # --placement-timeout: also how long to wait for those nodes to join

    @property
    def up_env(self) -> dict[str, str]:
        """Variables `ray up` needs for this file: Ray 2.60's autoscaler v2 (the default of `ray up`) does not
        support the `local` provider (ray-project/ray#57153): it never starts a worker host, so v1 runs there."""
        if self.is_local:
            return {"RAY_UP_enable_autoscaler_v2": "0"}
        return {}

    def commands(self, local_port: int = DASHBOARD_PORT) -> list[str]:
        """The run's steps as the equivalent shell commands, in order (what --dry-run prints)."""
        ray_file = shlex.quote(str(self.cluster_file))
        submit = ["ray", "job", "submit", "--address", f"http://{LOOPBACK}:{local_port}", "--submission-id",
                  self.submission_id, "--working-dir", self.runtime_env["working_dir"], "--runtime-env-json",
                  _json({k: v for k, v in self.runtime_env.items() if k != "working_dir"}), "--",
                  *self.entrypoint]
        steps = [
            f"cd {shlex.quote(str(PROJECT_DIR))}  # file_mounts in the cluster file are relative to the project",
            "ray get-auth-token --generate > /dev/null",
            " ".join([*(f"{key}={value}" for key, value in self.up_env.items()),
                      f"ray up -y --no-restart --disable-usage-stats {ray_file}"]),
            f"ray dashboard --port {local_port} {ray_file} &" + (
                f"  # then waits until the file's {self.min_nodes} nodes have joined (at most --placement-timeout)"
                if self.min_nodes > 1 else ""),
            f"RAY_AUTH_MODE=token {shlex.join(submit)}",
        ]
        if self.down:
            steps.append(f"ray down -y {ray_file}")
            steps.extend(self.host_stop_commands())
        return steps

    @property
    def is_local(self) -> bool:
        """Whether the file names machines of your own (Ray's `local` provider) rather than a cloud's."""
        return (self.config.get("provider") or {}).get("type") == "local"

    def hosts(self) -> list[str]:
        """The hosts of a `local` file, head first (empty for a cloud)."""
        if not self.is_local:
            return []
        provider = self.config["provider"]
        return [str(provider["head_ip"]), *(str(ip) for ip in provider.get("worker_ips") or [])]

    def host_stop_commands(self) -> list[str]:
        """What `--down` adds to `ray down` on a `local` file: `ray stop --force` on every host over SSH (`ray down`
        stops only the head's Ray, and the `local` provider's terminate only forgets a host)."""
        auth = self.config.get("auth") or {}
        key = f"-i {auth['ssh_private_key']} " if auth.get("ssh_private_key") else ""  # ~ left to the shell
        return [f"ssh {key}{auth.get('ssh_user', '')}@{host} \"bash -lic 'ray stop --force'\"" for host in self.hosts()]

    def teardown_hint(self) -> str:
        hint = f"the cluster keeps running (and billing): tear it down with `ray down -y {self.cluster_file}`"
        if self.is_local:
            hint = (f"the cluster keeps running on your hosts: end it with `ray down -y {self.cluster_file}`, then "
                    f"`ray stop --force` on each host ({', '.join(self.hosts())}): `ray down` ends only the head's "
                    f"Ray on a `local` cluster")
        return hint

    def attach_command(self, job: str) -> str:
        """The command that follows job `job` again from any terminal (and tears down once it has ended)."""
        name = self.experiment.rstrip("/").rsplit("/", 1)[-1]
        return shlex.join(["python", self.entrypoint[1], "--cluster", str(self.cluster_file), "--storage",
                           self.storage, "--name", name, "--attach", job])


def prepare_cluster_run(study_name: str, args: argparse.Namespace, argv: Sequence[str],
                        check_inputs: bool = True) -> ClusterRun:
    """Check a `--cluster` command line and decide what runs; ValueError (one line) for anything wrong.

    - the cluster file passes Ray's own validation (`load_cluster_file`);
    - `--storage` is a URI (s3://, gs://) or an absolute path given explicitly, which must be a filesystem every
      node mounts (checked again on the cluster, on every node, before any trial); never this machine's folder;
    - `--data`, when given, is a URI (synced to each node) or an absolute path on the cluster;
    - `--address` makes no sense with `--cluster` (the study joins the cluster it runs on).
    """
    cluster_file = Path(args.cluster).expanduser().resolve()
    # Validated as prepared by Ray, kept as written: `create_or_update_cluster` prepares it (merging the
    # setup_commands into head/worker_setup_commands) itself, and a prepared config would get them twice.
    config = _absolute_file_mounts(load_cluster_file(cluster_file, prepared=False), PROJECT_DIR)
    min_nodes = 1 + minimum_workers(load_cluster_file(cluster_file))
    argv = list(argv)
    storage = str(args.storage)
    if not is_remote(storage):
        given = any(item == "--storage" or item.startswith("--storage=") for item in argv)
        if not given or is_uri(storage) or not storage.startswith("/"):
            raise ValueError(f"--cluster {args.cluster}: --storage {storage} is a folder on this machine, which "
                             f"the cluster's nodes cannot reach; {SHARED_STORAGE_HELP}")
    for option in ("data", "stage1_data", "stage1_checkpoint"):
        value = getattr(args, option, None)
        if value and not is_remote(value) and not str(value).startswith("/"):
            flag = "--" + option.replace("_", "-")
            raise ValueError(f"--cluster {args.cluster}: {flag} {value} is a relative path on this machine; give "
                             f"an s3:// URI or an absolute path that every node of the cluster mounts")
    if check_inputs:  # --data / --stage1-data / --stage1-checkpoint s3://...: listed, not downloaded
        check_remote_inputs(args)
    remote_argv = _without_options(argv, LOCAL_ONLY)
    entrypoint = ("python", f"studies/{study_name}.py", *remote_argv, "--storage", storage, "--address", "auto")
    name = getattr(args, "name", None) or study_name
    return ClusterRun(
        cluster_file=cluster_file,
        config=config,
        entrypoint=entrypoint,
        storage=storage,
        experiment=f"{storage.rstrip('/')}/{name}",
        runtime_env=project_runtime_env(),
        submission_id=f"dsr-{study_name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",
        down=bool(getattr(args, "down", False)),
        min_nodes=min_nodes,
        placement_timeout_min=float(getattr(args, "placement_timeout", 15.0)),
    )


def minimum_workers(prepared: dict[str, Any]) -> int:
    """The worker nodes a prepared cluster config keeps up at all times (every worker host of a `local` file)."""
    types = prepared.get("available_node_types") or {}
    return sum(int(kind.get("min_workers") or 0) for kind in types.values())  # the head's type too: `local`


def package_files(runtime_env: dict[str, Any]) -> list[str]:
    """Every file of the working_dir package Ray would upload, built by Ray's own packaging function."""
    from ray._private.runtime_env.packaging import create_package
    from ray._private.ray_constants import RAY_RUNTIME_ENV_IGNORE_GITIGNORE

    include_gitignore = os.environ.get(RAY_RUNTIME_ENV_IGNORE_GITIGNORE, "0") != "1"  # as JobSubmissionClient
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "package.zip"
        create_package(runtime_env["working_dir"], target, include_gitignore=include_gitignore,
                       excludes=list(runtime_env.get("excludes", [])), logger=_quiet_logger())
        with zipfile.ZipFile(target) as package:
            return sorted(name for name in package.namelist() if not name.endswith("/"))


def dry_run(run: ClusterRun, out=None) -> int:
    """Print the commands in order, then every file of the package, one per line; contacts nothing."""
    out = out or sys.stdout
    files = package_files(run.runtime_env)
    print(f"# dry run: nothing was started. --cluster {run.cluster_file} runs, in order:", file=out)
    prerequisite = iam_prerequisite(run.config)
    if prerequisite:
        print(f"# prerequisite: {prerequisite}", file=out)
    for command in run.commands():
        print(command, file=out)
    if not run.down:
        print(f"# then {run.teardown_hint()} (or pass --down)", file=out)
    print(f"# results: {run.experiment}; report: python -m reports {run.experiment}", file=out)
    print(f"# the package Ray uploads as the job's working_dir ({len(files)} files):", file=out)
    for name in files:
        print(name, file=out)
    return 0


def iam_prerequisite(config: dict[str, Any]) -> str | None:
    """What an AWS cluster file needs in IAM before its first `ray up` (None for other providers)."""
    if (config.get("provider") or {}).get("type") != "aws":
        return None
    types = config.get("available_node_types") or {}
    head = config.get("head_node_type")

    def profile(name: str) -> str:
        return ((types[name].get("node_config") or {}).get("IamInstanceProfile") or {}).get("Name") or "(none)"

    workers = sorted({profile(name) for name in types if name != head})
    return (f"the instance profiles this file names exist (once per account: cluster/iam/setup.sh BUCKET): "
            f"{profile(head)} for the head, allowed to pass the workers' role (iam:PassRole) and to launch EC2 "
            f"instances, and {', '.join(workers) or '(none)'} for the workers, with access to the bucket; "
            f"see cluster/README.md")


def run_cluster_command(study_name: str, args: argparse.Namespace, argv: Sequence[str]) -> int:
    """`--cluster FILE [--dry-run] [--down] [--attach ID]` of a study: check, then dry-run, launch, or follow a
    submitted study again. Returns the exit code."""
    attaching = bool(getattr(args, "attach", None))
    run = prepare_cluster_run(study_name, args, argv, check_inputs=not attaching)  # attaching runs nothing new
    if getattr(args, "dry_run", False):
        return dry_run(run)
    if getattr(args, "attach", None):
        return attach(run, args.attach)
    return launch(run)


def launch(run: ClusterRun) -> int:
    """Bring the cluster up (or reuse it), submit the study, follow it; with --down tear the cluster down once
    the study has ended, and only then. Exit code: the study's, or INTERRUPTED / LOST when following stopped
    first (the study goes on; how to follow it again and how to tear down are printed)."""
    from ray.autoscaler import sdk
    from ray.autoscaler._private.cli_logger import cli_logger

    ensure_auth_token()
    print(f"cluster: starting or reusing {run.cluster_file} (ray up)", flush=True)
    os.environ.update(run.up_env)  # read by `ray up` in this process
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # what `ray up --disable-usage-stats` (the dry run's step) sets
    cli_logger.configure(log_style="auto", color_mode="auto", verbosity=0)  # as `ray up`: no per-command SSH lines
    sdk.create_or_update_cluster(run.config, no_restart=True)
    code, submitted = LOST, False
    try:
        port = _free_local_port()
        with dashboard_tunnel(run.cluster_file, port) as address:
            client = _job_client(address)
            wait_for_nodes(address, run.min_nodes, run.placement_timeout_min * 60.0, run.cluster_file)
            try:
                job = client.submit_job(entrypoint=shlex.join(run.entrypoint), runtime_env=run.runtime_env,
                                        submission_id=run.submission_id)
            finally:  # a submission whose answer was lost may still have started the study
                submitted = True
            print(f"job {job} submitted (follow it from another terminal: {run.attach_command(job)})", flush=True)
            code = follow_job(client, job)
    except KeyboardInterrupt:
        code = INTERRUPTED
    finally:
        _after_following(run, code, submitted)
    return code


def attach(run: ClusterRun, job: str) -> int:
    """`--attach ID`: follow a study submitted earlier (from another terminal) to its end; with --down tear the
    cluster down once it has ended. Exit code as `launch`."""
    code, known = LOST, False
    try:
        with dashboard_tunnel(run.cluster_file, _free_local_port()) as address:
            client = _job_client(address)
            try:
                client.get_job_status(job)
            except Exception as error:  # an unknown id: Ray raises RuntimeError naming it
                raise ValueError(f"--attach {job}: no such job on the cluster of {run.cluster_file} "
                                 f"({' '.join(str(error).split())[:200]})") from None
            known = True
            print(f"following job {job}", flush=True)
            code = follow_job(client, job)
    except KeyboardInterrupt:
        code = INTERRUPTED
    finally:
        if known:  # nothing to say (or tear down) about a job that was never found
            _after_following(run, code, True, job)
    return code


def wait_for_nodes(address: str, want: int, timeout_s: float, cluster_file: Path, poll_s: float = 2.0) -> int:
    """Wait until `want` nodes are alive in the cluster whose dashboard is at `address`: `ray up` returns once the
    head is up, and the workers the file keeps (min_workers; every host of a `local` file) join later, so a
    study submitted at once would start its trials on the head alone. Waits at most `timeout_s` (0: for ever),
    then says how many joined and goes on. Returns the number of alive nodes."""
    if want <= 1:  # the head: its dashboard answers through the tunnel
        return 1
    from ray.util.state import list_nodes

    deadline, said, alive = time.monotonic() + timeout_s, -1, 0
    while True:
        try:
            alive = len(list_nodes(address=address, filters=[("state", "=", "ALIVE")], raise_on_missing_output=False))
        except Exception as error:  # the dashboard is still starting: try again
            alive, problem = 0, " ".join(str(error).split())[:200]
        else:
            problem = ""
        if alive >= want:
            if said >= 0:
                print(f"cluster: all {want} nodes have joined", flush=True)
            return alive
        if alive != said:
            why = f" ({problem})" if problem else ""
            print(f"cluster: {alive} of {want} nodes have joined; waiting for the others{why}", flush=True)
            said = alive
        if timeout_s and time.monotonic() > deadline:
            print(f"cluster: only {alive} of {want} nodes joined within {timeout_s / 60:.0f} min; submitting anyway "
                  f"(trials use the nodes there are; why the others did not start: `ray monitor {cluster_file}`)",
                  flush=True)
            return alive
        time.sleep(poll_s)


def _after_following(run: ClusterRun, code: int, submitted: bool, job: str | None = None) -> None:
    """Tear down (--down) only when no study can still be running; otherwise say how to go on."""
    from ray.autoscaler import sdk

    job = job or run.submission_id
    ended = code not in (INTERRUPTED, LOST)
    if code == 0:
        print(f"results: {run.experiment}; report: python -m reports {run.experiment}", flush=True)
    if not ended and submitted:
        print(f"cluster: the study may still be running (job {job}); follow it again with `{run.attach_command(job)}"
              f"{' --down' if run.down else ''}`; once it has ended, {run.teardown_hint()}", flush=True)
        if run.down:
            print("cluster: not torn down (--down): that would end a running study", flush=True)
        return
    if run.down:
        print(f"cluster: tearing down {run.cluster_file}", flush=True)
        sdk.teardown_cluster(run.config)
        if run.is_local:
            stop_ray_on_hosts(run)
    else:
        print(f"cluster: {run.teardown_hint()} (or pass --down)", flush=True)


def stop_ray_on_hosts(run: ClusterRun, timeout_s: int = 120) -> None:
    """`--down` on a `local` file, after Ray's teardown: `ray stop --force` on every host over SSH, through Ray's
    own SSH command runner (the file's user and key). Ray's teardown runs a graceful `ray stop` on the head alone
    (which can leave its gcs_server running) and the `local` provider's terminate only forgets a host, so Ray
    would go on running on every worker host. A host that cannot be reached is named, not fatal."""
    import subprocess

    from ray.autoscaler._private.providers import _get_node_provider

    config = run.config
    auth = dict(config.get("auth") or {})
    if auth.get("ssh_private_key"):
        auth["ssh_private_key"] = os.path.expanduser(str(auth["ssh_private_key"]))
    provider = _get_node_provider(config["provider"], config["cluster_name"])
    for host in run.hosts():
        runner = provider.get_command_runner(f"{host}: ", host, auth, config["cluster_name"], subprocess, True)
        try:
            runner.run("ray stop --force", timeout=timeout_s)
        except Exception as error:  # noqa: BLE001 - one line per host that could not be reached
            print(f"cluster: could not stop Ray on {host} ({' '.join(str(error).split())[:200]}); run `ray stop "
                  f"--force` there", file=sys.stderr, flush=True)
    print(f"cluster: Ray stopped on {len(run.hosts())} hosts", flush=True)


def submit_and_follow(address: str, entrypoint: Sequence[str], runtime_env: dict[str, Any],
                      submission_id: str) -> int:
    """Submit `entrypoint` as a Ray job to the Jobs API at `address`, print its output as it comes; 0 on success.

    Token authentication: with RAY_AUTH_MODE=token the client sends the local token (~/.ray/auth_token or
    RAY_AUTH_TOKEN). Ctrl-C stops following, not the job.
    """
    client = _job_client(address)
    job = client.submit_job(entrypoint=shlex.join(entrypoint), runtime_env=runtime_env,
                            submission_id=submission_id)
    print(f"job {job} submitted to {address}", flush=True)
    try:
        return follow_job(client, job)
    except KeyboardInterrupt:
        return INTERRUPTED


def follow_job(client: Any, job: str, settle_s: float = 60.0) -> int:
    """Print the job's output as it comes until it ends: 0 when it succeeded, 1 when it failed or was stopped,
    LOST when the log stream broke and its state cannot be read (the job goes on). Ctrl-C (KeyboardInterrupt)
    propagates: the caller decides; the job goes on."""
    from ray.job_submission import JobStatus

    async def tail() -> None:
        async for lines in client.tail_job_logs(job):
            print(lines, end="", flush=True)

    try:
        asyncio.run(tail())
    except KeyboardInterrupt:
        print(f"\nstopped following job {job}; it goes on", flush=True)
        raise
    except Exception as error:  # the tunnel or the head went away: the job itself may be fine
        print(f"\nlost the log of job {job} ({' '.join(str(error).split())[:200]})", file=sys.stderr, flush=True)
        settle_s = 0.0  # its state now, once: no waiting on a connection that is gone
    deadline = time.monotonic() + settle_s
    while True:  # the log stream can end just before the status is final
        try:
            status = client.get_job_status(job)
        except Exception as error:
            print(f"cannot read the state of job {job} ({' '.join(str(error).split())[:200]})", file=sys.stderr)
            return LOST
        if status.is_terminal():
            break
        if time.monotonic() > deadline:
            print(f"job {job} is still {status.value.lower()} after its log ended", file=sys.stderr)
            return LOST
        time.sleep(1.0)
    if status != JobStatus.SUCCEEDED:
        message = client.get_job_info(job).message or ""
        print(f"job {job} {status.value.lower()}: {' '.join(message.split())[:300]}", file=sys.stderr)
        return 1
    return 0


def _job_client(address: str) -> Any:
    """A Ray Jobs client of the dashboard at `address`, with token authentication (`use_token_auth`)."""
    use_token_auth()
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address)


def use_token_auth() -> None:
    """Token authentication for this process's Ray clients: the cluster files start Ray with RAY_AUTH_MODE=token.

    Ray reads the mode once, when it is imported, and a study module has imported Ray before `--cluster` is seen:
    setting the variable alone would leave the clients without the token (the dashboard answers "Missing
    authentication token"). So the cached config is refreshed, as Ray itself does when `ray.init()` turns token
    authentication on (`_enable_token_auth`)."""
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    os.environ["RAY_AUTH_MODE"] = "token"
    if not is_token_auth_enabled():
        from ray._raylet import Config

        Config.initialize("")


def ensure_auth_token() -> None:
    """Create ~/.ray/auth_token when there is no token yet (the cluster file mounts it on every node)."""
    from ray._private.authentication.authentication_token_setup import generate_and_save_token
    from ray._raylet import AuthenticationTokenLoader

    loader = AuthenticationTokenLoader.instance()
    if not loader.has_token(ignore_auth_mode=True):
        generate_and_save_token()
        loader.reset_cache()


@contextlib.contextmanager
def dashboard_tunnel(cluster_file: Path, port: int, timeout_s: float = 120.0):
    """`ray dashboard --port PORT FILE` in the background (an SSH tunnel to the head's loopback dashboard) while
    the block runs; ended by its process group afterwards. The autoscaler SDK has no non-blocking tunnel."""
    ray_cli = Path(sys.executable).with_name("ray")
    argv = [str(ray_cli) if ray_cli.exists() else "ray", "dashboard", "--port", str(port), str(cluster_file)]
    proc = subprocess.Popen(argv, cwd=PROJECT_DIR, start_new_session=True)
    try:
        if not _wait_for_port(port, proc, timeout_s):
            raise RuntimeError(f"the dashboard tunnel ({shlex.join(argv)}) did not open {LOOPBACK}:{port}; is "
                               f"the cluster up (`ray get-head-ip {cluster_file}`)?")
        yield f"http://{LOOPBACK}:{port}"
    finally:
        _end_process_group(proc)


# ------------------------------------------------------------------------------------------------ helpers


def _absolute_file_mounts(config: dict[str, Any], base: Path) -> dict[str, Any]:
    """The cluster config with relative local file_mounts sources resolved against the project, not the cwd."""
    mounts = {}
    for remote, local in (config.get("file_mounts") or {}).items():
        local = str(local)
        if not local.startswith(("/", "~")):
            local = str((base / local).resolve())
        mounts[remote] = local
    return {**config, "file_mounts": mounts}


def _without_options(argv: Sequence[str], options: dict[str, bool]) -> list[str]:
    """`argv` without the given options; True: the option takes a value (`--opt V` or `--opt=V`)."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
            continue
        flag = item.split("=", 1)[0]
        if flag in options:
            skip = options[flag] and "=" not in item
            continue
        out.append(item)
    return out


def _json(value: Any) -> str:
    import json

    return json.dumps(value, sort_keys=True)


def _quiet_logger():
    import logging

    logger = logging.getLogger("dsr.launch.packaging")
    logger.setLevel(logging.WARNING)
    return logger


def _free_local_port() -> int:
    """A TCP port on loopback that nothing listens on now (8265 may be a local Ray's own dashboard)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout_s: float) -> bool:
    """Wait until 127.0.0.1:port accepts a connection; False if `proc` exits or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not _has_exited(proc):
        try:
            socket.create_connection((LOOPBACK, port), timeout=1.0).close()
            return True
        except OSError:
            time.sleep(0.5)
    return False


def _has_exited(proc: subprocess.Popen) -> bool:
    """Whether `proc` has exited, without reaping it (its pid, and so its group id, stays reserved)."""
    if proc.returncode is not None:
        return True
    return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _end_process_group(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """SIGTERM the group `proc` leads, then SIGKILL what is left (the tunnel's ssh may outlive its parent).
    `proc` is reaped only at the very end, so its group id cannot name an unrelated process meanwhile."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and not _has_exited(proc):
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


__all__ = ["ClusterRun", "prepare_cluster_run", "package_files", "dry_run", "run_cluster_command", "launch",
           "attach", "submit_and_follow", "follow_job", "ensure_auth_token"]
