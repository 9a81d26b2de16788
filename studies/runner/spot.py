"""Spot nodes: a trial interrupted by a lost node is not the trial's failure, and the driver's log outlives the head.

- `NodeLossNotCounted`: Ray 2.60 Tune already leaves out of `--max-failures` an actor that died because its node
  was drained as preempted (`RayActorError.preempted`: a cloud's termination notice the autoscaler acted on). A
  spot node reclaimed without such a notice just disappears, and Tune counts that like an error of the trial's
  own. With this callback an actor error is not counted when the node the trial last reported from is no longer
  alive: the trial is retried from its last checkpoint however many nodes are lost (even with --max-failures 0),
  and an error of its own still counts.
- `DriverLogToStorage`: a study running as a Ray job has its output (the job's log) only on the head's disk. The
  callback copies it to the experiment's storage (`<experiment>/driver-<job id>.log`) every few minutes and at the
  end, so a lost head does not take it along.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

from ray import tune

DRIVER_LOG_EVERY_S = 120.0
NODE_DEATH_SETTLE_S = 30.0  # Ray's GCS declares a silent node dead after about 15-30 s of missed health checks


def alive_node_ips() -> set[str]:
    """The addresses of the alive nodes of the connected Ray cluster."""
    import ray

    return {node["NodeManagerAddress"] for node in ray.nodes() if node.get("Alive")}


def counts_as_failure(trial: Any, exc: Exception | None = None, alive: Callable[[], set[str]] = alive_node_ips,
                      settle_s: float | None = None) -> bool:
    """Whether an actor error of `trial` is the trial's own: False when the node it last reported from is gone.

    The actor's error can reach the driver before the GCS has declared its node dead (that takes a few missed
    health checks), so a node still listed alive is watched for up to `settle_s` (default NODE_DEATH_SETTLE_S)
    before the error is counted; an error that says the node died is believed at once.
    """
    node = (trial.last_result or {}).get("node_ip")
    if not node:
        return True
    if "node has died" in str(exc or ""):
        return False
    deadline = time.monotonic() + (NODE_DEATH_SETTLE_S if settle_s is None else settle_s)
    while node in alive():
        if time.monotonic() >= deadline:
            return True
        time.sleep(1.0)
    return False


class NodeLossNotCounted(tune.Callback):
    """A trial's actor that died with its node is not the trial's failure (see the module).

    Tune decides whether to retry right after counting (`Trial.handle_error`, then `Trial.should_recover`), before
    any callback hears of the error, so the rule goes into the count itself: at setup this callback wraps
    `Trial._handle_ray_actor_error` (Ray 2.60; the wrapper is installed once and checks its target exists) so that
    an actor error whose node is no longer alive is not counted. Errors of the trial's own (exceptions in the
    trainable arrive as RayTaskError) and actors dying on a live node (out of memory, a crash) still count.
    """

    def __init__(self, alive: Callable[[], set[str]] = alive_node_ips) -> None:
        self._alive = alive

    def setup(self, **info: Any) -> None:
        install_node_loss_rule(self._alive)


def install_node_loss_rule(alive: Callable[[], set[str]] = alive_node_ips) -> None:
    """Wrap Tune's count of actor errors (once per process) so that a lost node is not counted."""
    from ray.tune.experiment.trial import Trial

    counted = getattr(Trial, "_handle_ray_actor_error", None)
    if counted is None:
        raise RuntimeError("this Ray's Tune has no Trial._handle_ray_actor_error: studies/runner/spot.py needs "
                           "updating for it")
    if getattr(counted, "_dsr_node_loss_rule", False):
        return

    def handle_ray_actor_error(trial: Any, exc: Exception) -> None:
        if counts_as_failure(trial, exc, alive):
            counted(trial, exc)
            return
        print(f"trial {trial.trial_id}: its node {trial.last_result.get('node_ip')} was lost; retried from its "
              f"last checkpoint, not counted against --max-failures", flush=True)

    handle_ray_actor_error._dsr_node_loss_rule = True  # type: ignore[attr-defined]
    Trial._handle_ray_actor_error = handle_ray_actor_error


def job_log_path() -> str | None:
    """The log file of the Ray job this driver runs as (on the head), or None outside a job."""
    from ray._private.runtime_env.constants import RAY_JOB_CONFIG_JSON_ENV_VAR

    config = os.environ.get(RAY_JOB_CONFIG_JSON_ENV_VAR)
    if not config:
        return None
    try:
        import ray

        job = (json.loads(config).get("metadata") or {}).get("job_submission_id")
        logs = ray._private.worker._global_node.get_logs_dir_path()
    except Exception:  # not connected, or Ray moved these: no copy, never a failed study
        return None
    return os.path.join(logs, f"job-driver-{job}.log") if job else None


class DriverLogToStorage(tune.Callback):
    """Copy the job's log to the experiment's storage now and then and at the end (see the module)."""

    def __init__(self, source: Callable[[], str | None] = job_log_path, every_s: float = DRIVER_LOG_EVERY_S) -> None:
        self._source, self.every_s = source, every_s
        self._copied = float("-inf")
        self._storage: Any = None

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if trials and self._storage is None:
            self._storage = trials[0].storage
        if time.monotonic() - self._copied >= self.every_s:
            self.copy()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if trials and self._storage is None:
            self._storage = trials[0].storage
        self.copy()

    def copy(self) -> str | None:
        """Upload the log now; its path in storage, or None when there is nothing to copy (or it failed)."""
        self._copied = time.monotonic()
        path = self._source()
        if not path or self._storage is None or not os.path.isfile(path):
            return None
        target = f"{self._storage.experiment_fs_path}/driver-{os.path.basename(path).removeprefix('job-driver-')}"
        try:
            with open(path, "rb") as log, self._storage.storage_filesystem.open_output_stream(target) as out:
                out.write(log.read())
        except OSError as error:  # storage briefly unreachable: the next copy catches up
            print(f"driver log not copied to {target}: {' '.join(str(error).split())[:200]}", flush=True)
            return None
        return target


__all__ = ["NodeLossNotCounted", "install_node_loss_rule", "counts_as_failure", "DriverLogToStorage",
           "job_log_path", "alive_node_ips"]
