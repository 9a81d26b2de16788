"""The offline demo dataset builder: layout, masks, idempotence, determinism and safety."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import skimage
from PIL import Image

from dsr.data import build_dataset, list_categories
from dsr.data.defects import DEFECTS, MIN_AREA, draw_defect
from dsr.data.demo import (
    COMPLETE_MARKER, DEMO_CATEGORIES, DEMO_SOURCES, build_demo, main, photo_path, read_demo_params,
)

SMALL = dict(image_size=32, train_count=4, test_good_count=2, test_defect_count=4, stage1_count=6)


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_photos_come_from_the_installed_package() -> None:
    for name, (photo, _, defects) in DEMO_SOURCES.items():
        path = photo_path(photo)
        assert path.is_file() and Path(skimage.__file__).parent in path.parents
        assert len(defects) >= 2 and set(defects) <= set(DEFECTS)


def test_layout_and_masks(tmp_path: Path) -> None:
    root = build_demo(tmp_path / "demo", **SMALL)
    assert list_categories("demo", root) == sorted(DEMO_CATEGORIES)
    for category in DEMO_CATEGORIES:
        base = root / category
        assert len(list((base / "train" / "good").glob("*.png"))) == 4
        assert len(list((base / "test" / "good").glob("*.png"))) == 2
        defect_images = [p for p in (base / "test").glob("*/*.png") if p.parent.name != "good"]
        assert len(defect_images) == 4 and len({p.parent.name for p in defect_images}) >= 2
        for image_path in defect_images:
            mask_path = base / "ground_truth" / image_path.parent.name / f"{image_path.stem}_mask.png"
            mask = np.asarray(Image.open(mask_path))
            image = Image.open(image_path)
            assert image.mode == "RGB" and image.size == (32, 32) and mask.shape == (32, 32)
            assert set(np.unique(mask).tolist()) == {0, 255}  # binary and non-empty
            assert (mask > 0).mean() >= MIN_AREA[image_path.parent.name]
        test = build_dataset("demo", root, category, "test", image_size=32)
        test.validate()
        assert test.labels.tolist().count(1) == 4 and len(test) == 6


def test_defects_change_the_masked_pixels() -> None:
    rng = np.random.default_rng(0)
    image = np.full((64, 64, 3), 0.5, dtype=np.float32)
    for name in DEFECTS:
        painted, mask = draw_defect(name, image, rng)
        assert painted.shape == image.shape and mask.dtype == bool
        assert mask.mean() >= MIN_AREA[name]
        changed = np.abs(painted - image).max(axis=2) > 0.05
        assert changed[mask].mean() > 0.95  # the mask marks pixels the defect really changed
        assert changed[~mask].mean() < 0.05
    with pytest.raises(ValueError, match="unknown defect 'dent'"):
        draw_defect("dent", image, rng)


def test_idempotent_and_rebuilt_when_parameters_change(tmp_path: Path) -> None:
    root = build_demo(tmp_path / "demo", **SMALL)
    marker = root / COMPLETE_MARKER
    stamp = marker.stat().st_mtime_ns
    assert build_demo(root, **SMALL) == root and marker.stat().st_mtime_ns == stamp  # reused, not rewritten
    build_demo(root, **{**SMALL, "train_count": 5})
    assert read_demo_params(root)["train_count"] == 5
    assert len(list((root / "brick" / "train" / "good").glob("*.png"))) == 5


def test_half_written_build_is_rebuilt(tmp_path: Path) -> None:
    root = build_demo(tmp_path / "demo", **SMALL)
    expected = _hashes(root)
    (root / COMPLETE_MARKER).unlink()  # as if interrupted before the marker was written
    for p in (root / "grass" / "test" / "good").iterdir():
        p.unlink()
    (root / "grass" / "junk.txt").write_text("partial")
    (tmp_path / ".demo.building").mkdir()  # a leftover temporary folder
    build_demo(root, **SMALL)
    assert _hashes(root) == expected
    assert not (tmp_path / ".demo.building").exists()


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    first = _hashes(build_demo(tmp_path / "a", **SMALL, seed=3))
    assert _hashes(build_demo(tmp_path / "b", **SMALL, seed=3)) == first
    other = _hashes(build_demo(tmp_path / "c", **SMALL, seed=4))
    assert other.keys() == first.keys() and other != first


def test_categories_are_independent(tmp_path: Path) -> None:
    both = _hashes(build_demo(tmp_path / "all", **SMALL))
    alone = _hashes(build_demo(tmp_path / "one", categories=["gravel"], **SMALL))
    assert all(both[name] == digest for name, digest in alone.items() if name.startswith("gravel"))


def test_refuses_a_foreign_folder_and_bad_parameters(tmp_path: Path) -> None:
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.png").write_bytes(b"precious")
    with pytest.raises(ValueError, match="not a demo build"):
        build_demo(foreign, **SMALL)
    assert os.listdir(foreign) == ["holiday.png"]
    with pytest.raises(ValueError, match="categories"):
        build_demo(tmp_path / "x", categories=["bottle"])
    with pytest.raises(ValueError, match="train_count"):
        build_demo(tmp_path / "x", train_count=0)
    with pytest.raises(ValueError, match="test split would be empty"):
        build_demo(tmp_path / "x", test_good_count=0, test_defect_count=0)


def test_defaults_and_command_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(tmp_path / "demo")]) == 0
    assert "demo dataset ready" in capsys.readouterr().out
    params = read_demo_params(tmp_path / "demo")
    assert params["image_size"] == 128 and params["categories"] == list(DEMO_CATEGORIES)
    train = build_dataset("demo", tmp_path / "demo", "brick", "train", image_size=128)
    assert len(train) == 60
    test = build_dataset("demo", tmp_path / "demo", "brick", "test", image_size=128)
    assert len(test) == 45 and int(test.labels.sum()) == 25  # 20 normal, 5 of each of the 5 defect types


def test_parallel_builds_agree(tmp_path: Path) -> None:
    # two processes building the same root at once (parallel trials): both get one finished, identical build
    import multiprocessing

    root = tmp_path / "demo"
    with multiprocessing.get_context("fork").Pool(2) as pool:
        results = pool.starmap(build_demo, [(root, DEMO_CATEGORIES[:1], 32, 4, 2, 4, 0, 6)] * 2)
    assert results == [root, root]
    assert read_demo_params(root)["categories"] == list(DEMO_CATEGORIES[:1])
    assert _hashes(root) == _hashes(build_demo(tmp_path / "alone", DEMO_CATEGORIES[:1], 32, 4, 2, 4, 0, 6))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".demo.")) == [".demo.lock"]


def test_stage1_photographs_are_general_crops_not_a_category(tmp_path: Path) -> None:
    from dsr.data import list_categories
    from dsr.data.demo import demo_stage1_folder, stage1_photos

    root = build_demo(tmp_path / "demo", **SMALL)
    folder = demo_stage1_folder(root)
    assert folder is not None and len(list(folder.glob("*.png"))) == SMALL["stage1_count"]
    assert "stage1" not in list_categories("demo", root)
    names = {p.name for p in stage1_photos()}
    assert len(names) >= 10 and not names & {"brick.png", "grass.png", "gravel.png"}
    with Image.open(next(folder.glob("*.png"))) as image:
        assert image.size == (32, 32) and image.mode == "RGB"
