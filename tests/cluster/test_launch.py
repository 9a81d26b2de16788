"""`--cluster FILE`: every check before anything starts, `--dry-run` (the commands and Ray's own package, no
cloud contacted), the study's command line on the head, and joining an existing cluster in one line."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from s3_server import free_port

import studies.runner.launch as launch
from studies.ablation import STUDY
from studies.runner.harness import build_parser
from studies.runner.runtime import PROJECT_DIR, connect

AWS = PROJECT_DIR / "cluster" / "aws.yaml"


def _prepare(*argv: str) -> launch.ClusterRun:
    args = build_parser(STUDY).parse_args(list(argv))
    return launch.prepare_cluster_run(STUDY.name, args, list(argv))


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
    real_popen = subprocess.Popen

    def local_git_only(args, *rest, **kwargs):  # the code's commit for the job's environment is read with git
        if isinstance(args, (list, tuple)) and args and args[0] == "git":
            return real_popen(args, *rest, **kwargs)
        return refuse()

    monkeypatch.setattr(subprocess, "Popen", local_git_only)


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
    from studies.runner.runtime import load_cluster_file

    config = load_cluster_file(AWS)
    profiles = {kind["node_config"]["IamInstanceProfile"]["Name"] for kind in config["available_node_types"].values()}
    (prerequisite,) = [line for line in lines if line.startswith("# prerequisite:")]  # named before the commands
    assert all(name in prerequisite for name in profiles) and "iam:PassRole" in prerequisite
    assert "cluster/iam/setup.sh" in prerequisite and lines.index(prerequisite) < lines.index(commands[0])


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


@pytest.mark.slow
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
    address = f"127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(ConnectionError) as info:
        connect(address)
    assert time.monotonic() - start < 10
    assert address in str(info.value) and "\n" not in str(info.value)


def test_setup_commands_run_once_on_every_node() -> None:
    """`create_or_update_cluster` prepares the config it gets (Ray's `prepare_config` merges setup_commands into
    head_setup_commands and worker_setup_commands): what `--cluster` hands it must come out with each command
    once."""
    import copy

    from ray.autoscaler._private.util import prepare_config

    run = _prepare("--cluster", str(AWS), "--storage", "s3://bucket/dsr")
    written = run.config["setup_commands"]
    bootstrapped = prepare_config(copy.deepcopy(run.config))  # what Ray's `ray up` does first with it
    for key in ("head_setup_commands", "worker_setup_commands"):
        commands = bootstrapped[key]
        assert written and all(commands.count(command) == 1 for command in written), key


class _FakeJobs:
    """A Ray Jobs client whose log stream ends with `tail_error` and whose job then has `status`."""

    def __init__(self, status: str, tail_error: BaseException | None = None) -> None:
        self.status, self.tail_error, self.submitted = status, tail_error, []

    def submit_job(self, entrypoint, runtime_env, submission_id):
        self.submitted.append(entrypoint)
        return submission_id

    async def tail_job_logs(self, job):
        yield "training...\n"
        if self.tail_error is not None:
            raise self.tail_error

    def get_job_status(self, job):
        from ray.job_submission import JobStatus

        if job == "nope":
            raise RuntimeError(f"Job {job} does not exist")
        return JobStatus(self.status)

    def get_job_info(self, job):
        return type("Info", (), {"message": "it failed"})()


@pytest.fixture
def fake_cluster(monkeypatch: pytest.MonkeyPatch):
    """`launch`/`attach` against a fake Ray Jobs API: no cloud, no tunnel; records teardowns."""
    import contextlib

    from ray.autoscaler import sdk

    calls = {"up": 0, "down": 0}
    monkeypatch.setattr(sdk, "create_or_update_cluster", lambda *a, **k: calls.__setitem__("up", calls["up"] + 1))
    monkeypatch.setattr(sdk, "teardown_cluster", lambda *a, **k: calls.__setitem__("down", calls["down"] + 1))
    monkeypatch.setattr(launch, "ensure_auth_token", lambda: None)
    monkeypatch.setattr(launch, "dashboard_tunnel",
                        lambda *a, **k: contextlib.nullcontext("http://127.0.0.1:1"))

    def use(client: _FakeJobs) -> dict:
        monkeypatch.setattr(launch, "_job_client", lambda address: client)
        return calls

    return use


@pytest.mark.parametrize("tail_error, code", [(ConnectionError("tunnel closed"), launch.LOST),
                                              (KeyboardInterrupt(), launch.INTERRUPTED)])
def test_down_never_ends_a_study_that_may_still_run(fake_cluster, capsys, tail_error, code) -> None:
    calls = fake_cluster(_FakeJobs("RUNNING", tail_error))
    run = _prepare("--cluster", str(AWS), "--storage", "s3://bucket/dsr", "--down")
    assert launch.launch(run) == code
    out = capsys.readouterr().out
    assert calls == {"up": 1, "down": 0}
    job = run.submission_id
    assert f"--cluster {AWS} --storage s3://bucket/dsr --name ablation --attach {job} --down" in out  # follow again
    assert f"ray down -y {AWS}" in out and "not torn down" in out  # how to tear down, once it has ended


@pytest.mark.parametrize("status, code", [("SUCCEEDED", 0), ("FAILED", 1), ("STOPPED", 1)])
def test_down_tears_down_once_the_study_has_ended(fake_cluster, capsys, status, code) -> None:
    calls = fake_cluster(_FakeJobs(status))
    run = _prepare("--cluster", str(AWS), "--storage", "s3://bucket/dsr", "--down")
    assert launch.launch(run) == code
    assert calls == {"up": 1, "down": 1}
    assert "training..." in capsys.readouterr().out


def test_attach_follows_a_submitted_study_to_its_end_then_tears_down(fake_cluster, capsys) -> None:
    calls = fake_cluster(_FakeJobs("SUCCEEDED"))
    argv = ["--cluster", str(AWS), "--storage", "s3://bucket/dsr", "--attach", "dsr-ablation-1", "--down",
            "--dataset", "mvtec", "--data", "s3://not-listed/when-attaching"]
    assert launch.run_cluster_command(STUDY.name, build_parser(STUDY).parse_args(argv), argv) == 0
    assert calls == {"up": 0, "down": 1}  # attaching never starts or changes the cluster
    assert "following job dsr-ablation-1" in capsys.readouterr().out
    calls = fake_cluster(_FakeJobs("RUNNING"))
    argv[5] = "nope"
    with pytest.raises(ValueError, match="--attach nope: no such job") as info:
        launch.run_cluster_command(STUDY.name, build_parser(STUDY).parse_args(argv), argv)
    assert "\n" not in str(info.value) and calls["down"] == 1  # not torn down for an unknown id


def test_attach_and_placement_timeout_stay_on_this_machine() -> None:
    run = _prepare("--cluster", str(AWS), "--storage", "s3://bucket/dsr", "--placement-timeout", "5")
    args = build_parser(STUDY).parse_args(list(run.entrypoint[2:]))
    assert args.placement_timeout == 5 and args.attach is None


def test_the_job_environment_carries_the_checkouts_commit() -> None:
    """Ray's package of the project has no .git: the commit reaches the nodes' trials through env_vars."""
    from dsr.provenance import COMMIT_ENV, code_version
    from studies.runner.runtime import project_runtime_env

    env = project_runtime_env()["env_vars"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_DIR, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    assert env[COMMIT_ENV] == head.stdout.strip() == code_version()["commit"]


# ------------------------------------------------------------------------------------- a `local` (onprem) file

ONPREM = PROJECT_DIR / "cluster" / "onprem.yaml"


def test_an_onprem_file_waits_for_every_host_uses_autoscaler_v1_and_stops_every_host_on_down(no_cloud) -> None:
    run = _prepare("--cluster", str(ONPREM), "--storage", "s3://bucket/dsr", "--down")
    assert run.min_nodes == 3  # the head and both worker hosts of the file
    assert run.up_env == {"RAY_UP_enable_autoscaler_v2": "0"}  # v2 never starts a `local` worker
    commands = run.commands()
    (up,) = [c for c in commands if " ray up " in f" {c}"]
    assert up.startswith("RAY_UP_enable_autoscaler_v2=0 ray up")
    stops = commands[commands.index(f"ray down -y {ONPREM}") + 1:]
    assert [c.split()[3] for c in stops] == [f"<SSH_USER>@{h}" for h in ("<HEAD_HOST>", "<WORKER_HOST_1>",
                                                                        "<WORKER_HOST_2>")]
    assert all(c.endswith("\"bash -lic 'ray stop --force'\"") for c in stops)
    hint = _prepare("--cluster", str(ONPREM), "--storage", "s3://bucket/dsr").teardown_hint()
    assert "ray stop --force" in hint and "<WORKER_HOST_2>" in hint
    aws = _prepare("--cluster", str(AWS), "--storage", "s3://bucket/dsr", "--down")
    assert aws.min_nodes == 1 and aws.up_env == {} and aws.hosts() == []  # GPU workers come on demand


def test_waiting_for_nodes_ends_when_all_joined_or_goes_on_after_the_timeout(monkeypatch, capsys) -> None:
    import ray.util.state

    seen = iter([RuntimeError("dashboard starting"), 1, 2, 3])

    def list_nodes(address, filters, raise_on_missing_output):
        value = next(seen)
        if isinstance(value, Exception):
            raise value
        return [object()] * value

    monkeypatch.setattr(ray.util.state, "list_nodes", list_nodes)
    assert launch.wait_for_nodes("http://x", 3, 60.0, AWS, poll_s=0.0) == 3
    out = capsys.readouterr().out
    assert "0 of 3 nodes have joined" in out and "dashboard starting" in out and "all 3 nodes have joined" in out
    monkeypatch.setattr(ray.util.state, "list_nodes", lambda **kwargs: [object()])
    assert launch.wait_for_nodes("http://x", 2, 0.05, AWS, poll_s=0.01) == 1
    assert "only 1 of 2 nodes joined" in capsys.readouterr().out  # says so and goes on


def test_the_job_client_sends_the_token_though_ray_was_imported_first(tmp_path: Path) -> None:
    """A study module imports Ray before `--cluster` is parsed, and Ray reads RAY_AUTH_MODE once at import: the
    client must still authenticate (the dashboard of a `--cluster` cluster refuses requests without the token)."""
    code = ("import os; os.environ.pop('RAY_AUTH_MODE', None); import studies.ablation; "
            "from ray._private.authentication.authentication_utils import is_token_auth_enabled as on; "
            "from studies.runner.launch import use_token_auth; before = on(); use_token_auth(); "
            "print(before, on())")
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("RAY_AUTH")}
    run = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120,
                         env={**env, "PYTHONPATH": str(PROJECT_DIR), "HOME": str(tmp_path)})
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split()[-2:] == ["False", "True"]
