"""Faults: a trial's worker killed mid-stage-2 resumes from its checkpoint; a driver killed mid-study is finished
by `--resume` without re-running the trials it had completed. Nothing already computed is lost."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from ray.tune import ExperimentAnalysis
from study_run import error_lines, is_done, read_results, wait_until

pytestmark = pytest.mark.slow  # real study processes

CHECKPOINT_EVERY = 10
REPORT_EVERY = 5
STAGE2_ITERATIONS = 100


def _stage2_checkpointed(experiment: Path) -> tuple[str, dict] | None:
    """(trial folder, last result) of a trial in stage 2 that has a stage-2 checkpoint and is still training."""
    for name, rows in read_results(experiment).items():
        checkpointed = [r for r in rows if r["stage"] == "stage2" and r.get("checkpoint_dir_name")]
        if checkpointed and rows[-1]["stage"] == "stage2" and \
                rows[-1]["stage_iteration"] >= checkpointed[0]["stage_iteration"] + REPORT_EVERY:
            return name, rows[-1]
    return None


def test_killed_trial_worker_resumes_from_its_checkpoint(start_study, tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    run = start_study("ablation", ["--preset", "tiny", "--variants", "DSR", "--storage", str(storage), "--set",
                                   f"stage2_iterations={STAGE2_ITERATIONS}", "--checkpoint-every",
                                   str(CHECKPOINT_EVERY), "--report-every", str(REPORT_EVERY), "--no-report"])
    experiment = storage / "ablation"
    name, seen = wait_until(lambda: _stage2_checkpointed(experiment), 120, run, "a stage-2 checkpoint")
    (actor,) = wait_until(run.trial_actors, 10, run, "the trial actor's process")
    assert actor.pid == seen["pid"]  # Tune records the pid of the process that ran the trial
    os.kill(actor.pid, signal.SIGKILL)
    killed_at = seen["stage_iteration"]

    assert run.wait(timeout=180) == 0, run.output_tail()
    assert error_lines(run.stderr) == []
    rows = read_results(experiment)[name]
    assert is_done(rows), rows[-1:]
    before = [r for r in rows if r["pid"] == actor.pid]
    after = [r for r in rows if r["pid"] != actor.pid]
    assert before and after, "no result came from a restarted worker"
    # The restart continued from the last stage-2 checkpoint before the kill, not from the stage's start.
    checkpoints = [r["stage_iteration"] for r in before if r["stage"] == "stage2" and r.get("checkpoint_dir_name")]
    resumed = [r for r in after if r["stage"] == "stage2"]
    assert resumed, "stage 2 did not continue after the restart"
    last_checkpoint = max(checkpoints)  # the last one Tune recorded before the worker died
    assert last_checkpoint > killed_at - CHECKPOINT_EVERY  # no checkpoint seen before the kill went missing
    assert resumed[0]["stage_iteration"] == last_checkpoint + REPORT_EVERY, (checkpoints, resumed[0])
    assert resumed[0]["stage_iteration"] > REPORT_EVERY
    # Tune's iteration count continued from the checkpoint too, and stage 1 was not run again.
    restored_from = next(r for r in before if r["stage"] == "stage2" and r["stage_iteration"] == last_checkpoint)
    assert after[0]["training_iteration"] == restored_from["training_iteration"] + 1
    assert not [r for r in after if r["stage"] == "stage1"]
    expected = range(last_checkpoint + REPORT_EVERY, STAGE2_ITERATIONS + 1, REPORT_EVERY)
    assert [r["stage_iteration"] for r in resumed] == list(expected)
    # FailureConfig(max_failures=3) retried it: Tune counted one failure of this trial.
    (trial,) = ExperimentAnalysis(str(experiment)).trials
    assert trial.status == "TERMINATED" and trial.run_metadata.num_failures == 1


def _one_done_one_checkpointed(experiment: Path) -> tuple[str, str] | None:
    """(a finished trial, a trial still in stage 2 with two stage-2 checkpoints), once both exist.

    Two checkpoints: with CheckpointConfig(num_to_keep=2) Tune then has snapshotted the experiment since the
    first trial finished, so the kill tests resuming, not Tune's snapshot interval.
    """
    trials = read_results(experiment)
    done = [name for name, rows in trials.items() if is_done(rows)]
    running = [name for name, rows in trials.items() if rows and rows[-1]["stage"] == "stage2"
               and len([r for r in rows[:-1] if r["stage"] == "stage2" and r.get("checkpoint_dir_name")]) >= 2]
    return (done[0], running[0]) if done and running else None


def test_resume_after_the_driver_is_killed_reruns_nothing_finished(start_study, tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    args = ["--preset", "tiny", "--variants", "DSR_U-", "DSR", "DSR_random", "--max-concurrent", "1",
            "--storage", str(storage), "--set", "stage2_iterations=60", "--checkpoint-every", str(CHECKPOINT_EVERY),
            "--report-every", str(REPORT_EVERY), "--no-report"]
    experiment = storage / "ablation"
    first = start_study("ablation", args)
    done, interrupted = wait_until(lambda: _one_done_one_checkpointed(experiment), 150, first,
                                   "one trial done and another checkpointed in stage 2")
    first.kill_driver_group()
    first.kill_survivors()  # Ray's raylet and workers are in other process groups: ended by pid
    assert first.processes() == []
    finished_rows = (experiment / done / "result.json").read_text()
    finished_files = sorted(p.name for p in (experiment / done).iterdir())
    before = read_results(experiment)
    assert len(before) < 3 or not all(is_done(rows) for rows in before.values())

    second = start_study("ablation", [*args, "--resume"])
    assert second.wait(timeout=180) == 0, second.output_tail()
    assert error_lines(second.stderr) == [] and "trial error" not in second.stdout
    after = read_results(experiment)
    assert len(after) == 3 and all(is_done(rows) for rows in after.values()), {k: v[-1:] for k, v in after.items()}
    # The finished trial was not re-run: its results and checkpoints are exactly as they were.
    assert (experiment / done / "result.json").read_text() == finished_rows
    assert sorted(p.name for p in (experiment / done).iterdir()) == finished_files
    # The interrupted trial kept its results and went on from a stage-2 checkpoint, not from the start.
    old_rows = before[interrupted]
    assert after[interrupted][: len(old_rows)] == old_rows
    new_rows = after[interrupted][len(old_rows):]
    old_pids = {r["pid"] for r in old_rows}
    assert new_rows and not {r["pid"] for r in new_rows} & old_pids
    assert not [r for r in new_rows if r["stage"] == "stage1"], "stage 1 ran again"
    checkpoints = {r["stage_iteration"]: r["training_iteration"] for r in old_rows
                   if r["stage"] == "stage2" and r.get("checkpoint_dir_name")}
    first_new = new_rows[0]
    assert first_new["stage"] == "stage2" and first_new["stage_iteration"] - REPORT_EVERY in checkpoints, \
        (checkpoints, first_new)
    assert first_new["training_iteration"] == checkpoints[first_new["stage_iteration"] - REPORT_EVERY] + 1
    # The stage-1 model was trained once across both runs: the resumed run found it in storage and skipped the
    # stage-1 phase; every main trial only loaded it.
    phase = read_results(experiment / "stage1")
    assert len(phase) == 1 and "stage 1: training" not in second.stdout
    assert {r.get("stage1_source") for rows in after.values() for r in rows if r["stage"] == "stage1"} == {"loaded"}


STAGE1_LONG = 1500  # tiny stage-1 steps: about 10 s on an idle 2-core machine, long enough to be interrupted


def _stage1_checkpointed(experiment: Path) -> dict | None:
    """The stage-1 phase's last result once it has a checkpoint and trained past it."""
    for rows in read_results(experiment / "stage1").values():
        checkpointed = [r for r in rows if r.get("checkpoint_dir_name") and r["stage"] == "stage1"]
        if checkpointed and rows[-1]["stage_iteration"] > checkpointed[0]["stage_iteration"]:
            return rows[-1]
    return None


def test_ctrl_c_during_stage1_stops_the_study_and_resume_goes_on_from_its_checkpoint(start_study,
                                                                                    tmp_path: Path) -> None:
    """Ctrl-C in the stage-1 phase ends the study with one line saying how to go on, before any main trial
    starts (they would only fail for want of their stage 1); --resume continues stage 1 from its checkpoint."""
    storage = tmp_path / "storage"
    args = ["--preset", "tiny", "--variants", "DSR", "--storage", str(storage), "--no-report", "--set",
            f"stage1_iterations={STAGE1_LONG}", "--set", "stage2_iterations=10", "--set", "stage3_iterations=5",
            "--checkpoint-every", "20", "--report-every", "10"]
    run = start_study("ablation", args)
    experiment = storage / "ablation"
    wait_until(lambda: _stage1_checkpointed(experiment), 300, run, "a stage-1 checkpoint", poll_s=0.05)
    os.kill(run.proc.pid, signal.SIGINT)  # what Ctrl-C sends to the driver
    assert run.wait(timeout=90) == 2, run.output_tail()
    (line,) = error_lines(run.stderr)
    assert "stage-1 phase stopped" in line and "--resume" in line, line
    assert read_results(experiment) == {}  # no main trial started
    (before,) = read_results(experiment / "stage1").values()
    assert before[-1]["stage_iteration"] < STAGE1_LONG

    second = start_study("ablation", [*args, "--resume"])
    assert second.wait(timeout=600) == 0, second.output_tail()
    (after,) = read_results(experiment / "stage1").values()
    new_rows = after[len(before):]
    checkpoints = [r["stage_iteration"] for r in before if r.get("checkpoint_dir_name")]
    assert new_rows[0]["stage_iteration"] == max(checkpoints) + 10  # went on from its last checkpoint
    assert after[-1]["stage"] == "done"
    trials = read_results(experiment)
    assert len(trials) == 1 and all(is_done(rows) for rows in trials.values())
