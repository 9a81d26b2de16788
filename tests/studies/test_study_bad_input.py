"""Bad input stops a study with one `error: ...` line naming the option or file, before Ray or any trial starts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from study_run import error_lines

BROKEN_YAML = "cluster_name: [unclosed\n  head: 1\n"
INVALID_CLUSTER = "cluster_name: bad\nmax_workers: many\nprovider:\n  type: aws\n  region: us-west-2\n"
LIMIT_S = 20.0

# (study, arguments, words the error line must contain); {tmp} is the test's folder.
CASES = {
    "cluster file not YAML": ("ablation", ["--cluster", "{tmp}/broken.yaml"],
                              ["cluster file", "broken.yaml", "YAML", "line 2"]),
    "cluster file fails Ray's validation": ("ablation", ["--cluster", "{tmp}/invalid.yaml"],
                                            ["cluster file", "invalid.yaml", "validation", "max_workers"]),
    "cluster file missing": ("ablation", ["--cluster", "{tmp}/missing.yaml"], ["missing.yaml", "not found"]),
    "data path missing": ("ablation", ["--dataset", "folder", "--data", "{tmp}/nonexistent"],
                          ["--data", "nonexistent"]),
    "unknown variant": ("ablation", ["--variants", "DSR", "NOPE"], ["variant", "NOPE"]),
    "unknown strategy in --set": ("ablation", ["--variants", "DSR", "--set", "sampling_strategy=nope"],
                                  ["sampling_strategy", "nope"]),
    "unknown strategy of the searched study": ("sampling", ["--strategies", "uniform", "nope"],
                                               ["--strategies", "nope"]),
    "unknown strategy of the grid study": ("sampling", ["--grid", "--strategies", "nope"],
                                           ["sampling_strategy", "nope"]),
    "similarity bound out of range": ("similarity_bound", ["--lambdas", "0.1", "2"], ["similarity_bound", "2"]),
    "similarity bound via --set": ("ablation", ["--variants", "DSR", "--set", "similarity_bound=2"],
                                   ["similarity_bound", "2"]),
    "not a config field": ("ablation", ["--set", "no_such_field=1"], ["--set", "no_such_field"]),
    "unreachable --address": ("ablation", ["--address", "127.0.0.1:1"], ["--address", "127.0.0.1:1"]),
    "malformed --address": ("ablation", ["--address", "nowhere"], ["--address", "nowhere"]),
    "corrupt PNG in train/good": ("ablation", ["--dataset", "folder", "--data", "{tmp}/parts"],
                                  ["parts/train/good/broken.png", "corrupt"]),
    "stage-1 checkpoint missing": ("ablation", ["--stage1-checkpoint", "{tmp}/nope.pt"],
                                   ["--stage1-checkpoint", "nope.pt", "not found"]),
    "stage-1 checkpoint that does not fit": ("ablation", ["--stage1-checkpoint", "{tmp}/k16.pt"],
                                             ["--stage1-checkpoint", "k16.pt", "shape", "codebook_size=32"]),
    "search fraction out of range": ("sampling", ["--search-fraction", "1.5"], ["--search-fraction", "1.5"]),
}


def _parts_with_a_corrupt_png(root: Path) -> None:
    """A user folder (MVTec layout, no masks) whose train/good holds one PNG that is cut off after its header."""
    import numpy as np
    from PIL import Image

    for name in ("train/good/0.png", "train/good/1.png", "test/good/0.png", "test/bad/0.png"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((16, 16, 3), 120, np.uint8)).save(root / name)
    (root / "train/good/broken.png").write_bytes((root / "train/good/0.png").read_bytes()[:60])


def _latent_of_another_codebook(path: Path) -> None:
    """A stage-1 model file of the tiny preset's widths but K = 16 codes (the tiny preset has 32)."""
    import torch

    from dsr.config import preset
    from dsr.model import DSR

    torch.save(DSR(preset("tiny").replace(codebook_size=16)).latent.state_dict(), path)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_before_any_trial(case: str, start_study, tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text(BROKEN_YAML)
    (tmp_path / "invalid.yaml").write_text(INVALID_CLUSTER)
    _parts_with_a_corrupt_png(tmp_path / "parts")
    _latent_of_another_codebook(tmp_path / "k16.pt")
    study, args, words = CASES[case]
    storage = tmp_path / "storage"
    started = time.monotonic()
    run = start_study(study, ["--preset", "tiny", "--storage", str(storage), "--no-report",
                              *[arg.format(tmp=tmp_path) for arg in args]])
    code = run.wait(timeout=60)
    elapsed = time.monotonic() - started
    assert code == 2, run.output_tail()
    assert elapsed < LIMIT_S, f"took {elapsed:.1f} s"
    lines = error_lines(run.stderr)
    assert len(lines) == 1, run.output_tail()
    assert "Traceback" not in run.stderr, run.output_tail()
    for word in words:
        assert word in lines[0], lines[0]
    assert "Trial status" not in run.stdout
    assert not list(run.ray_tmp.rglob("session_*")), "Ray was started"
    assert not (storage / study).exists() or not any((storage / study).iterdir()), "results were written"


def test_existing_experiment_is_not_overwritten(start_study, tmp_path: Path) -> None:
    """Starting a study again under the same name, without --resume, changes nothing and says what to do."""
    experiment = tmp_path / "storage" / "ablation"
    experiment.mkdir(parents=True)
    (experiment / "tuner.pkl").write_bytes(b"not really a tuner")
    run = start_study("ablation", ["--preset", "tiny", "--storage", str(tmp_path / "storage"), "--no-report"])
    assert run.wait(timeout=60) == 2, run.output_tail()
    (line,) = error_lines(run.stderr)
    assert "--resume" in line and str(experiment) in line
    assert [p.name for p in experiment.iterdir()] == ["tuner.pkl"]
    assert (experiment / "tuner.pkl").read_bytes() == b"not really a tuner"
    assert not list(run.ray_tmp.rglob("session_*"))
