"""Fail fast when trials cannot be placed: a resource no node of the cluster has, for `--placement-timeout`.

Ray Tune waits for ever for a trial whose resources the cluster never provides (a GPU on a CPU-only cluster, GPU
workers the autoscaler cannot launch: an IAM refusal, a spot quota of 0, no capacity), and only logs a warning.
`PlacementWatch`, a Tune callback on the driver, checks every few seconds whether some pending trial asks for more
of a resource than any alive node has in total. When that has lasted `--placement-timeout` minutes it stops the
study with one line naming the resource and the autoscaler's last error. A trial that merely waits for a busy node
(its resources exist, they are taken) is queued, not unplaceable, and never stops anything.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ray import tune

from studies.runner.study import StudyError

DEFAULT_TIMEOUT_MIN = 15.0


class PlacementTimeout(StudyError):
    """Trials could not be placed for the whole --placement-timeout."""


def missing_resources(request: Mapping[str, float], nodes: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """{resource: the most any one node has} for every resource of `request` (one bundle) that no node has
    enough of; empty when some node could hold the whole bundle."""
    asked = {name: amount for name, amount in request.items() if amount > 0}
    if any(all(node.get(name, 0.0) >= amount for name, amount in asked.items()) for node in nodes):
        return {}
    return {name: max((node.get(name, 0.0) for node in nodes), default=0.0)
            for name, amount in asked.items() if not any(node.get(name, 0.0) >= amount for node in nodes)}


def alive_node_resources() -> list[dict[str, float]]:
    """The total resources of every alive node of the connected Ray cluster."""
    import ray

    return [dict(node.get("Resources") or {}) for node in ray.nodes() if node.get("Alive")]


def autoscaler_last_error() -> str:
    """The autoscaler's latest launch failure (node type, category, description) or its own error, from what
    `ray status` reads in the GCS; "none reported" on a cluster without one (an embedded Ray, `--address` to a
    fixed cluster)."""
    try:
        from ray._private import ray_constants
        from ray.experimental.internal_kv import _internal_kv_get

        status = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
        error = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_ERROR)
    except Exception as err:  # not connected, an older GCS: say so rather than fail the message
        return f"unknown ({_one_line(err, 120)})"
    found = launch_failure(json.loads(status)) if status else None
    if found:
        return found
    if error:
        return _one_line(error.decode(errors="replace"), 300)
    return "none reported (no autoscaler, or it has not failed)"


def launch_failure(status: Mapping[str, Any]) -> str | None:
    """The latest failed node launch in an autoscaler status report (DEBUG_AUTOSCALING_STATUS), or None."""
    report = status.get("autoscaler_report") or {}
    records = ((report.get("node_availability_summary") or {}).get("node_availabilities") or {}).values()
    failed = [r for r in records if not r.get("is_available") and r.get("unavailable_node_information")]
    if failed:
        latest = max(failed, key=lambda r: r.get("last_checked_timestamp") or 0)
        info = latest["unavailable_node_information"]
        return _one_line(f"{latest.get('node_type')}: {info.get('category')}: {info.get('description')}", 300)
    if report.get("failed_nodes"):
        ip, node_type = report["failed_nodes"][-1]
        return f"{node_type}: node terminated ({ip})"
    return None


class PlacementWatch(tune.Callback):
    """Stops the experiment (PlacementTimeout) when a pending trial has been unplaceable for `timeout_s`."""

    def __init__(self, timeout_s: float, check_every_s: float = 5.0,
                 nodes: Callable[[], list[dict[str, float]]] = alive_node_resources,
                 last_error: Callable[[], str] = autoscaler_last_error) -> None:
        self.timeout_s = timeout_s
        self.check_every_s = check_every_s
        self._nodes, self._last_error = nodes, last_error
        self._checked = float("-inf")
        self._since: float | None = None

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        if self.timeout_s <= 0 or now - self._checked < self.check_every_s:
            return
        self._checked = now
        problem = self._unplaceable([t for t in trials if t.status == "PENDING"])
        if problem is None:
            self._since = None
            return
        if self._since is None:
            self._since = now
        elif now - self._since >= self.timeout_s:
            raise PlacementTimeout(
                f"trials cannot be placed: {problem}, for {self.timeout_s / 60:g} min (--placement-timeout); "
                f"the autoscaler's last error: {self._last_error()}; the study stopped, the cluster is still up "
                f"(finished trials are kept: fix the cause, then run the same command with --resume)")

    def _unplaceable(self, pending: list) -> str | None:
        if not pending:
            return None
        nodes = self._nodes()
        for trial in pending:
            for bundle in trial.placement_group_factory.bundles:
                missing = missing_resources(bundle, nodes)
                if missing:
                    wanted = ", ".join(f"{name} {bundle[name]:g}" for name in missing)
                    have = ", ".join(f"{name} {most:g}" for name, most in missing.items())
                    return (f"a trial asks for {wanted} and no node of the cluster ({len(nodes)} alive) has that "
                            f"much (at most {have})")
        return None


def placement_callbacks(args: Any) -> list[tune.Callback]:
    """The callbacks a study's Tune runs get from its command line (`--placement-timeout` minutes)."""
    minutes = getattr(args, "placement_timeout", DEFAULT_TIMEOUT_MIN)
    return [PlacementWatch(minutes * 60.0)] if minutes and minutes > 0 else []


def _one_line(text: object, limit: int = 200) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


__all__ = ["PlacementTimeout", "PlacementWatch", "missing_resources", "autoscaler_last_error", "launch_failure",
           "placement_callbacks", "DEFAULT_TIMEOUT_MIN"]
