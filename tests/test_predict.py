"""`python -m dsr predict`: scores.csv and an overlay PNG per image; bad input is one line and exit code 2."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dsr import DSR, preset
from dsr.checkpoints import save_checkpoint
from dsr.predict import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(DSR(preset("tiny")), tmp_path_factory.mktemp("ckpt") / "model.pt")


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "parts"
    rng = np.random.default_rng(0)
    for i in range(3):
        (folder / ("sub" if i == 2 else "")).mkdir(parents=True, exist_ok=True)
        path = folder / ("sub" if i == 2 else "") / f"part{i}.png"
        Image.fromarray((rng.random((80, 70, 3)) * 255).astype(np.uint8)).save(path)
    return folder


def test_scores_and_overlays_for_a_folder(checkpoint: Path, images: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main([str(checkpoint), str(images), "--out", str(out), "--threshold", "0.5", "--batch-size", "2"]) == 0
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert [Path(r["path"]).name for r in rows] == ["part0.png", "part1.png", "part2.png"]
    for row in rows:
        score = float(row["image_score"])
        assert 0.0 <= score <= 1.0 and row["anomalous"] == str(int(score >= 0.5))
        with Image.open(out / row["overlay"]) as overlay:
            assert overlay.mode == "RGB" and overlay.size == (256, 256)  # 64 px maps enlarged x4
    # the same images scored directly give the same scores (the CLI adds nothing to the model)
    from dsr.checkpoints import load_checkpoint
    from dsr.data.io import read_image

    model = load_checkpoint(checkpoint).eval()
    batch = torch.stack([read_image(Path(r["path"]), 64, "rgb", model.config.antialias)[0] for r in rows])
    direct = model.predict(batch).image_scores
    assert [float(r["image_score"]) for r in rows] == pytest.approx(direct.tolist(), abs=1e-5)


def test_existing_output_is_not_overwritten_without_the_flag(checkpoint, images, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    assert main([str(checkpoint), str(images), "--out", str(out)]) == 0
    before = (out / "scores.csv").read_bytes()
    assert main([str(checkpoint), str(images), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and (out / "scores.csv").read_bytes() == before
    assert main([str(checkpoint), str(images), "--out", str(out), "--overwrite"]) == 0


@pytest.mark.parametrize("case", ["missing image", "corrupt image", "wrong checkpoint", "missing checkpoint"])
def test_bad_input_is_one_line_naming_the_file(case, checkpoint, images, tmp_path, capsys) -> None:
    target = images
    ckpt = checkpoint
    if case == "missing image":
        target = tmp_path / "nope.png"
    elif case == "corrupt image":
        target = tmp_path / "broken.png"
        target.write_bytes(b"\x89PNG not really")
    elif case == "wrong checkpoint":
        ckpt = tmp_path / "other.pt"
        torch.save({"weights": torch.zeros(2)}, ckpt)
    else:
        ckpt = tmp_path / "gone.pt"
    assert main([str(ckpt), str(target), "--out", str(tmp_path / "o")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(err) == 1 and err[0].startswith("error: ")
    named = {"missing image": "nope.png", "corrupt image": "broken.png", "wrong checkpoint": "other.pt",
             "missing checkpoint": "gone.pt"}[case]
    assert named in err[0]


def test_reference_files_with_a_category(tmp_path: Path, images: Path) -> None:
    """--reference DIR --category C loads the reference's six files (the paper model) and scores images."""
    from test_checkpoints import SECTION_FILES, parse_reference_keys

    reference = tmp_path / "reference"
    reference.mkdir()
    generator = torch.Generator().manual_seed(1)
    for section, keys in parse_reference_keys().items():
        for stem in SECTION_FILES[section]:
            state = {name: torch.randn(shape, generator=generator) * 0.02 for name, shape in keys.items()}
            torch.save(state, reference / f"{stem}.pckl")
    one = images / "part0.png"
    out = tmp_path / "out"
    assert main([str(one), "--reference", str(reference), "--category", "bottle", "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert len(rows) == 1 and 0.0 <= float(rows[0]["image_score"]) <= 1.0
    assert main([str(one), "--reference", str(reference), "--category", "cable", "--out", str(tmp_path / "o2")]) == 2
