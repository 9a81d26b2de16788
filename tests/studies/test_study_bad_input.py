"""Bad input stops a study with one `error: ...` line naming the option or file (exit code 2), before Ray or any
trial starts. Every case runs in-process through `run_study` with Ray's start guarded; a few also run as real
study processes (slow), end to end."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from study_run import error_lines

# (study, arguments, words the error line must contain); {tmp} is the folder of bad inputs.
CASES = {
    "cluster file not YAML": ("ablation", ["--cluster", "{tmp}/broken.yaml"],
                              ["cluster file", "broken.yaml", "YAML", "line 2"]),
    "cluster file fails Ray's validation": ("ablation", ["--cluster", "{tmp}/invalid.yaml"],
                                            ["cluster file", "invalid.yaml", "validation", "max_workers"]),
    "cluster file missing": ("ablation", ["--cluster", "{tmp}/missing.yaml"], ["missing.yaml", "not found"]),
    "data path missing": ("ablation", ["--dataset", "folder", "--data", "{tmp}/nonexistent"],
                          ["--data", "nonexistent"]),
    "unknown category": ("ablation", ["--categories", "brick", "marble"], ["--categories", "marble", "brick"]),
    "unknown variant": ("ablation", ["--variants", "DSR", "NOPE"], ["variant", "NOPE"]),
    "unknown strategy in --set": ("ablation", ["--variants", "DSR", "--set", "sampling_strategy=nope"],
                                  ["sampling_strategy", "nope"]),
    "unknown strategy of the searched study": ("sampling", ["--strategies", "uniform", "nope"],
                                               ["--strategies", "nope"]),
    "unknown strategy of the grid study": ("sampling", ["--grid", "--strategies", "nope"],
                                           ["sampling_strategy", "nope"]),
    "searched study over two seeds": ("sampling", ["--seeds", "2"], ["--seeds 2", "--repeats N"]),
    "unknown search metric": ("sampling", ["--metric", "foo"], ["--metric foo", "unknown metric"]),
    "no repeats": ("sampling", ["--repeats", "0"], ["--repeats must be >= 1, got 0"]),
    "repeats of a grid": ("sampling", ["--grid", "--repeats", "2"], ["--repeats 2", "repeats are for searches"]),
    "tracking uri without a tracker": ("ablation", ["--tracking-uri", "sqlite:///x.db"],
                                       ["--tracking-uri is for --tracker mlflow"]),
    "similarity bound out of range": ("similarity_bound", ["--lambdas", "0.1", "2"], ["similarity_bound", "2"]),
    "similarity bound via --set": ("ablation", ["--variants", "DSR", "--set", "similarity_bound=2"],
                                   ["similarity_bound", "2"]),
    "not a config field": ("ablation", ["--set", "no_such_field=1"], ["--set", "no_such_field"]),
    "--set without a value": ("ablation", ["--set", "similarity_bound"], ["--set", "FIELD=VALUE"]),
    "unknown preset": ("ablation", ["--preset", "huge"], ["huge"]),
    "unreachable --address": ("ablation", ["--address", "127.0.0.1:1"], ["--address", "127.0.0.1:1"]),
    "malformed --address": ("ablation", ["--address", "nowhere"], ["--address", "nowhere"]),
    "corrupt PNG in train/good": ("ablation", ["--dataset", "folder", "--data", "{tmp}/parts"],
                                  ["parts/train/good/broken.png", "corrupt"]),
    "stage-1 checkpoint missing": ("ablation", ["--stage1-checkpoint", "{tmp}/nope.pt"],
                                   ["--stage1-checkpoint", "nope.pt", "not found"]),
    "stage-1 checkpoint that does not fit": ("ablation", ["--stage1-checkpoint", "{tmp}/k16.pt"],
                                             ["--stage1-checkpoint", "k16.pt", "shape", "codebook_size=32"]),
    "search fraction out of range": ("sampling", ["--search-fraction", "1.5"], ["--search-fraction", "1.5"]),
    "negative --checkpoint-minutes": ("ablation", ["--checkpoint-minutes", "-1"], ["--checkpoint-minutes", "-1"]),
}
# The cases that also run as a real process: one per stage of the checks (the study's space, the data, Ray).
END_TO_END = ("unknown variant", "corrupt PNG in train/good", "unreachable --address")


def _argv(case: str, bad_inputs: Path, storage: Path) -> tuple[str, list[str]]:
    study, args, _ = CASES[case]
    return study, ["--preset", "tiny", "--storage", str(storage), "--no-report",
                   *[arg.format(tmp=bad_inputs) for arg in args]]


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test at once if anything starts Ray, a cluster or a Tune run."""
    import ray
    from ray import tune

    import studies.runner.launch as launch

    def started(*_, **__):
        raise AssertionError("bad input reached Ray")

    monkeypatch.setattr(ray, "init", started)
    monkeypatch.setattr(tune.Tuner, "fit", started)
    monkeypatch.setattr(launch, "launch", started)


def run_in_process(study: str, argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    from studies.runner.harness import run_study

    code = run_study(importlib.import_module(f"studies.{study}").STUDY, argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_before_ray(case: str, bad_inputs: Path, demo_data: Path, tmp_path: Path, no_ray,
                                          capsys: pytest.CaptureFixture) -> None:
    import ray

    study, argv = _argv(case, bad_inputs, tmp_path / "storage")
    ray_before = ray.is_initialized()  # another module's in-process Ray may be up: this test must not change that
    code, out, err = run_in_process(study, argv, capsys)
    assert code == 2, (out, err)
    (line,) = error_lines(err)
    for word in CASES[case][2]:
        assert word in line, line
    assert "Traceback" not in err and "Trial status" not in out
    assert ray.is_initialized() == ray_before  # (and `no_ray` fails the test if anything called ray.init)
    assert not (tmp_path / "storage").exists() or not any((tmp_path / "storage").rglob("*")), "results were written"


def test_existing_experiment_is_not_overwritten(demo_data: Path, tmp_path: Path, no_ray,
                                                capsys: pytest.CaptureFixture) -> None:
    """Starting a study again under the same name, without --resume, changes nothing and says what to do."""
    experiment = tmp_path / "storage" / "ablation"
    experiment.mkdir(parents=True)
    (experiment / "tuner.pkl").write_bytes(b"not really a tuner")
    code, _, err = run_in_process("ablation", ["--preset", "tiny", "--storage", str(tmp_path / "storage"),
                                               "--no-report"], capsys)
    assert code == 2
    (line,) = error_lines(err)
    assert "--resume" in line and str(experiment) in line
    assert [p.name for p in experiment.iterdir()] == ["tuner.pkl"]
    assert (experiment / "tuner.pkl").read_bytes() == b"not really a tuner"


@pytest.mark.slow
@pytest.mark.parametrize("case", END_TO_END)
def test_bad_input_stops_the_study_process(case: str, start_study, bad_inputs: Path, tmp_path: Path) -> None:
    """The real command line: exit code 2, one error line and no traceback, no Ray session, nothing written."""
    study, argv = _argv(case, bad_inputs, tmp_path / "storage")
    run = start_study(study, argv)
    assert run.wait(timeout=120) == 2, run.output_tail()
    lines = error_lines(run.stderr)
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.output_tail()
    for word in CASES[case][2]:
        assert word in lines[0], lines[0]
    assert "Trial status" not in run.stdout
    assert not list(run.ray_tmp.rglob("session_*")), "Ray was started"
    storage = tmp_path / "storage"
    assert not storage.exists() or not any(storage.rglob("*")), "results were written"
