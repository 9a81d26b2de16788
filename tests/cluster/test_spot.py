"""Spot nodes: a lost node is not counted as the trial's failure (an error of its own still is), and the driver's
log is copied to the experiment's storage."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pyarrow.fs as pafs
import pytest
from ray.exceptions import RayActorError
from ray.tune.experiment.trial import Trial

from studies.runner.spot import DriverLogToStorage, NodeLossNotCounted


def _trial(node: str, max_failures: int = 0) -> Trial:
    """Tune's own Trial (as the driver holds it), last heard of from `node`."""
    trial = Trial("dsr_trial", config={}, max_failures=max_failures, stub=True)
    trial.run_metadata.last_result = {"node_ip": node, "trial_id": trial.trial_id}
    return trial


def _lost_node_error() -> RayActorError:
    return RayActorError(error_msg="The actor died because its node has died.")


@pytest.fixture
def rule(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Tune's real Trial with the node-loss rule installed (undone after the test); the alive nodes to edit."""
    alive = {"10.0.0.1", "10.0.0.2"}
    monkeypatch.setattr(Trial, "_handle_ray_actor_error", Trial._handle_ray_actor_error)
    monkeypatch.setattr(Trial, "local_path", property(lambda self: None))  # no error files: no Ray session here
    NodeLossNotCounted(alive=lambda: alive).setup()
    return alive


def test_a_trial_whose_node_is_gone_is_retried_even_with_max_failures_0(rule: set[str]) -> None:
    trial = _trial("10.0.0.2", max_failures=0)
    for lost in range(5):  # five spot reclaims in a row
        rule.discard(trial.last_result["node_ip"])
        trial.handle_error(_lost_node_error())
        assert trial.run_metadata.num_failures == 0 and trial.should_recover()
        trial.run_metadata.last_result = {"node_ip": f"10.0.1.{lost}"}
        rule.add(f"10.0.1.{lost}")


def test_a_node_the_gcs_declares_dead_only_after_the_error_arrived_is_not_counted() -> None:
    from studies.runner.spot import counts_as_failure

    trial = _trial("10.0.0.2")
    answers = iter([{"10.0.0.2"}, {"10.0.0.2"}, set()])  # alive, alive, then declared dead
    assert not counts_as_failure(trial, RuntimeError("worker connection lost"), alive=lambda: next(answers),
                                 settle_s=30)
    assert not counts_as_failure(trial, RayActorError(error_msg="The actor died because its node has died."),
                                 alive=lambda: {"10.0.0.2"}, settle_s=0)
    assert counts_as_failure(trial, RuntimeError("killed: out of memory"), alive=lambda: {"10.0.0.2"}, settle_s=0)


def test_an_error_of_the_trial_itself_still_counts(rule: set[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import studies.runner.spot as spot

    monkeypatch.setattr(spot, "NODE_DEATH_SETTLE_S", 0.0)
    trial = _trial("10.0.0.2", max_failures=0)
    trial.handle_error(RayActorError(error_msg="worker died"))  # its node is alive: out of memory, a crash
    assert trial.run_metadata.num_failures == 1 and not trial.should_recover()
    trial = _trial("10.0.0.2", max_failures=1)
    trial.handle_error(RuntimeError("raised in the trainable"))
    assert trial.run_metadata.num_failures == 1
    NodeLossNotCounted(alive=lambda: rule).setup()  # installed once, however many runs set it up
    rule.clear()
    trial.handle_error(_lost_node_error())
    assert trial.run_metadata.num_failures == 1


def test_the_driver_log_is_copied_to_the_experiment_storage(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "job-driver-dsr-ablation-7.log"
    log.parent.mkdir()
    log.write_text("stage 1: training\n")
    storage = SimpleNamespace(experiment_fs_path=str(tmp_path / "exp"), storage_filesystem=pafs.LocalFileSystem())
    (tmp_path / "exp").mkdir()
    callback = DriverLogToStorage(source=lambda: str(log), every_s=3600)
    callback.on_step_end(0, [SimpleNamespace(storage=storage)])
    assert (tmp_path / "exp" / "driver-dsr-ablation-7.log").read_text() == "stage 1: training\n"
    log.write_text("stage 1: training\ndone\n")
    callback.on_step_end(1, [SimpleNamespace(storage=storage)])  # not yet: every_s
    assert (tmp_path / "exp" / "driver-dsr-ablation-7.log").read_text() == "stage 1: training\n"
    callback.on_experiment_end([])  # always at the end
    assert (tmp_path / "exp" / "driver-dsr-ablation-7.log").read_text().endswith("done\n")
    assert DriverLogToStorage(source=lambda: None).copy() is None  # not a job: nothing to copy
