"""Fail fast: a pending trial asking for a resource no node has stops the study after --placement-timeout, in one
line naming the resource and the autoscaler's last error; a trial that only waits for a busy node never does."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from studies.runner.placement import (PlacementTimeout, PlacementWatch, launch_failure, missing_resources,
                                      placement_callbacks)


def _trial(status: str, **bundle: float) -> SimpleNamespace:
    return SimpleNamespace(status=status, placement_group_factory=SimpleNamespace(bundles=[bundle]))


@pytest.mark.parametrize("request_, nodes, missing", [
    ({"CPU": 1, "GPU": 1}, [{"CPU": 8}, {"CPU": 4, "GPU": 0}], {"GPU": 0}),
    ({"CPU": 1, "GPU": 1}, [{"CPU": 8}, {"CPU": 4, "GPU": 1}], {}),
    ({"CPU": 16}, [{"CPU": 8}, {"CPU": 4}], {"CPU": 8}),
    ({"CPU": 2, "GPU": 1}, [{"CPU": 8}, {"CPU": 1, "GPU": 1}], {}),  # each alone exists: not this check's business
    ({"CPU": 1, "GPU": 0}, [{"CPU": 1}], {}),
    ({"CPU": 1}, [], {"CPU": 0}),
])
def test_missing_resources(request_, nodes, missing) -> None:
    assert missing_resources(request_, nodes) == missing


def test_the_autoscalers_latest_launch_failure_is_read_from_its_status_report() -> None:
    status = {"autoscaler_report": {"node_availability_summary": {"node_availabilities": {
        "gpu_spot": {"node_type": "gpu_spot", "is_available": False, "last_checked_timestamp": 20.0,
                     "unavailable_node_information": {"category": "LaunchFailed", "description":
                                                      "UnauthorizedOperation: not authorized to perform: "
                                                      "iam:PassRole"}},
        "head": {"node_type": "head", "is_available": True, "last_checked_timestamp": 30.0}}}}}
    assert launch_failure(status) == ("gpu_spot: LaunchFailed: UnauthorizedOperation: not authorized to perform: "
                                      "iam:PassRole")
    assert launch_failure({"autoscaler_report": {"failed_nodes": [["10.0.0.9", "gpu_spot"]]}}) == \
        "gpu_spot: node terminated (10.0.0.9)"
    assert launch_failure({}) is None


def _watch(nodes: list[dict]) -> PlacementWatch:
    return PlacementWatch(0.05, check_every_s=0.0, nodes=lambda: nodes,
                          last_error=lambda: "gpu_spot: LaunchFailed: spot vCPU quota 0")


def test_an_unplaceable_trial_stops_the_study_after_the_timeout_in_one_line() -> None:
    watch = _watch([{"CPU": 8.0}])
    trials = [_trial("RUNNING", CPU=1.0), _trial("PENDING", CPU=1.0, GPU=1.0)]
    watch.on_step_begin(0, trials)  # the clock starts
    time.sleep(0.1)
    with pytest.raises(PlacementTimeout) as info:
        watch.on_step_begin(1, trials)
    message = str(info.value)
    assert "\n" not in message and "GPU 1" in message and "at most GPU 0" in message
    assert "spot vCPU quota 0" in message and "cluster is still up" in message and "--placement-timeout" in message


def test_a_trial_waiting_for_a_busy_node_or_a_node_that_arrives_never_stops_the_study() -> None:
    nodes = [{"CPU": 1.0}]
    watch = _watch(nodes)
    queued = [_trial("RUNNING", CPU=1.0), _trial("PENDING", CPU=1.0)]
    for step in range(3):
        watch.on_step_begin(step, queued)
        time.sleep(0.06)
    gpu = [_trial("PENDING", CPU=1.0, GPU=1.0)]
    watch.on_step_begin(3, gpu)
    nodes.append({"CPU": 4.0, "GPU": 1.0})  # the autoscaler's GPU worker joined in time
    time.sleep(0.06)
    watch.on_step_begin(4, gpu)


def test_the_timeout_comes_from_the_command_line_and_zero_waits_for_ever() -> None:
    (watch,) = placement_callbacks(SimpleNamespace(placement_timeout=2.0))
    assert watch.timeout_s == 120.0
    assert placement_callbacks(SimpleNamespace(placement_timeout=0)) == []
