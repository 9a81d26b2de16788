"""Run a real study script as a subprocess, watch its results on disk, and end every process it started by pid.

Each run gets its own Ray temp folder (RAY_TMPDIR, removed at the end) and a marker variable in its environment
that every process it spawns inherits, Ray's gcs_server, raylet and workers included. `StudyRun.end()` kills the
run's process group and then every process still carrying the marker, one pid at a time: never `ray stop`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

# isort: off
import ray  # noqa: F401  (psutil is not a project dependency: Ray puts the copy it bundles on sys.path)
import psutil
# isort: on

REPO_ROOT = Path(__file__).resolve().parents[2]
MARKER = "DSR_STUDY_TEST_RUN"


class StudyRun:
    """One study process (`python studies/<study>.py ARGS`) started in its own session, output to files."""

    def __init__(self, study: str, args: Sequence[str], log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.token = secrets.token_hex(8)
        self.ray_tmp = Path(tempfile.mkdtemp(prefix="dsrt", dir="/tmp"))  # short: Ray's socket paths < 108 chars
        log_dir.mkdir(parents=True, exist_ok=True)
        stem = f"{study}-{self.token}"
        self.stdout_path, self.stderr_path = log_dir / f"{stem}.out", log_dir / f"{stem}.err"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
        full_env.update({MARKER: self.token, "RAY_TMPDIR": str(self.ray_tmp), "PYTHONUNBUFFERED": "1",
                         "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0", **(env or {})})
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, f"studies/{study}.py", *args], cwd=REPO_ROOT,
                                         env=full_env, stdout=out, stderr=err, start_new_session=True)
        self.started = time.monotonic()

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def output_tail(self, chars: int = 4000) -> str:
        return f"--- stdout\n{self.stdout[-chars:]}\n--- stderr\n{self.stderr[-chars:]}"

    def wait(self, timeout: float) -> int:
        """The exit code; on timeout everything is ended and the test fails with the output's tail."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.end()
            raise AssertionError(f"study did not finish within {timeout:.0f} s\n{self.output_tail()}") from None

    def processes(self) -> list[psutil.Process]:
        """Every live process of this run: the driver and whatever carries the run's marker (Ray's included)."""
        found = []
        for proc in psutil.process_iter():
            try:
                ours = proc.pid == self.proc.pid or proc.environ().get(MARKER) == self.token
                if ours and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found

    def trial_actors(self) -> list[psutil.Process]:
        """The run's Tune trial actors: Ray names a function trainable's process `ray::ImplicitFunc.train`."""
        found = []
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                if "ImplicitFunc" in proc.name() or "ImplicitFunc" in " ".join(proc.cmdline()):
                    found.append(proc)
        return found

    def kill_driver_group(self) -> None:
        """SIGKILL the driver's process group (as a crash or `kill -9 -PGID` would); Ray's workers are left."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def end(self, grace_s: float = 5.0) -> list[int]:
        """End the run: SIGTERM its group, then SIGKILL every process still marked as ours, by pid.

        Returns the pids that had to be killed after the driver was gone (for tests that check clean exits).
        """
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        survivors = self.kill_survivors()
        shutil.rmtree(self.ray_tmp, ignore_errors=True)
        return survivors

    def kill_survivors(self, patience_s: float = 10.0) -> list[int]:
        """SIGKILL each process still carrying this run's marker, by pid, until none is left."""
        killed: list[int] = []
        deadline = time.monotonic() + patience_s
        while True:
            left = [p for p in self.processes() if p.pid != self.proc.pid]
            if not left:
                return killed
            if time.monotonic() > deadline:
                raise AssertionError(f"processes of the study survived SIGKILL: {[p.pid for p in left]}")
            for proc in left:
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.kill()
                    killed.append(proc.pid)
            psutil.wait_procs(left, timeout=2)


def read_results(experiment: Path) -> dict[str, list[dict]]:
    """Every trial folder's result.json, parsed: {trial folder name: [result, ...]} (lines half-written skipped)."""
    trials: dict[str, list[dict]] = {}
    for path in sorted(experiment.glob("*/result.json")):
        rows = []
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                rows.append(json.loads(line))
        trials[path.parent.name] = rows
    return trials


def wait_until(condition: Callable[[], object], timeout: float, run: StudyRun, what: str,
               poll_s: float = 0.1) -> object:
    """Poll `condition` until it returns something truthy; fail with `what` and the output when time runs out
    or the study exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if run.proc.poll() is not None:
            raise AssertionError(f"study exited ({run.proc.returncode}) before {what}\n{run.output_tail()}")
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{run.output_tail()}")


def is_done(rows: list[dict]) -> bool:
    return bool(rows) and rows[-1].get("stage") == "done"


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]
