"""The hard demo (dataset kind demo_hard): subtle defects on the easy demo's own normal images, deterministic,
masked, and changing the image near their mask only."""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from dsr.data import DATASET_KINDS, build_dataset, is_demo_kind, list_categories
from dsr.data.defects import DEFECTS, MIN_AREA, draw_defect
from dsr.data.demo import (
    DEMO_CATEGORIES, DEMO_SOURCES, HARD_SOURCES, _load_photo, _normal_image, build_demo, build_demo_kind, demo_kind,
    main, read_demo_params,
)
from dsr.data.hard_defects import HARD_DEFECTS

SMALL = dict(image_size=64, train_count=3, test_good_count=2, test_defect_count=7, stage1_count=4)
QUANTUM = 1.0 / 255.0  # one step of the 8-bit PNGs the demo writes: a change below a few of these is not there
STRONG = ("scratch", "crack", "stain", "hole")  # the easy demo's gross defects


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _to_64(image: np.ndarray) -> np.ndarray:
    """What the small preset sees: the 128 px image resized to 64 px as the datasets do (bilinear, antialiased)."""
    pil = Image.fromarray(np.round(image * 255).astype(np.uint8))
    return np.asarray(pil.resize((64, 64), Image.BILINEAR), dtype=np.float32) / 255.0


def test_the_hard_kind_and_its_defects_are_registered_apart_from_the_easy_ones() -> None:
    assert "demo_hard" in DATASET_KINDS and is_demo_kind("demo_hard") and is_demo_kind("demo")
    assert not is_demo_kind("mvtec") and not is_demo_kind(None)
    assert not set(HARD_DEFECTS) & set(DEFECTS) and len(HARD_DEFECTS) >= 5
    assert list(HARD_SOURCES) == list(DEMO_CATEGORIES)
    for category, (photo, tint, defects) in HARD_SOURCES.items():
        assert (photo, tint) == DEMO_SOURCES[category][:2] and set(defects) == set(HARD_DEFECTS)
    with pytest.raises(ValueError, match="unknown defect 'tint'; known defects: scratch"):
        draw_defect("tint", np.zeros((32, 32, 3), np.float32), np.random.default_rng(0))  # easy registry


def test_layout_masks_inside_the_image_and_the_kind_check(tmp_path: Path) -> None:
    root = build_demo(tmp_path / "hard", difficulty="hard", **SMALL)
    assert demo_kind(root) == "demo_hard" and read_demo_params(root)["difficulty"] == "hard"
    assert list_categories("demo_hard", root) == sorted(DEMO_CATEGORIES)
    for category in DEMO_CATEGORIES:
        base = root / category
        defect_images = sorted(p for p in (base / "test").glob("*/*.png") if p.parent.name != "good")
        assert sorted({p.parent.name for p in defect_images}) == sorted(HARD_DEFECTS)  # one folder per type
        for image_path in defect_images:
            mask_path = base / "ground_truth" / image_path.parent.name / f"{image_path.stem}_mask.png"
            mask = np.asarray(Image.open(mask_path))
            assert Image.open(image_path).size == (64, 64) and mask.shape == (64, 64)
            assert set(np.unique(mask).tolist()) == {0, 255}
            assert (mask > 0).mean() >= MIN_AREA[image_path.parent.name]
            frame = np.ones_like(mask, dtype=bool)
            frame[1:-1, 1:-1] = False
            assert not (mask[frame] > 0).any(), f"{image_path}: the defect runs off the image"
        test = build_dataset("demo_hard", root, category, "test", image_size=64)
        test.validate()
        assert test.kind == "demo_hard" and test.labels.tolist().count(1) == 7 and len(test) == 9
    with pytest.raises(ValueError, match="holds a build of dataset kind 'demo_hard', not 'demo'"):
        build_dataset("demo", root, "brick")
    with pytest.raises(ValueError, match="holds the hard demo .*'demo_hard'.*another folder"):
        build_demo(root, **SMALL)  # the easy demo never silently replaces the hard one (nor the reverse)
    easy = build_demo(tmp_path / "easy", **SMALL)
    with pytest.raises(ValueError, match="holds the easy demo"):
        build_demo(easy, difficulty="hard", **SMALL)
    with pytest.raises(ValueError, match="difficulty must be one of easy, hard, got 'medium'"):
        build_demo(tmp_path / "x", difficulty="medium")
    with pytest.raises(ValueError, match="not a demo; demo kinds: demo, demo_hard"):
        build_demo_kind("mvtec", tmp_path / "x")


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    first = _hashes(build_demo(tmp_path / "a", difficulty="hard", seed=3, **SMALL))
    assert _hashes(build_demo(tmp_path / "b", difficulty="hard", seed=3, **SMALL)) == first
    other = _hashes(build_demo(tmp_path / "c", difficulty="hard", seed=4, **SMALL))
    assert other.keys() == first.keys() and other != first


def test_normal_images_are_the_easy_demos_and_only_the_defects_differ(tmp_path: Path) -> None:
    # same photographs, tints and random stream up to the defects: a stage-1 model of one fits the other
    easy = _hashes(build_demo(tmp_path / "easy", **SMALL))
    hard = _hashes(build_demo(tmp_path / "hard", difficulty="hard", **SMALL))
    normal = [name for name in hard if name.startswith("stage1/") or "/good/" in name]
    assert len(normal) == SMALL["stage1_count"] + 3 * (SMALL["train_count"] + SMALL["test_good_count"])
    assert all(easy[name] == hard[name] for name in normal)
    defects = [name for name in hard if "/test/" in name and "/good/" not in name]
    assert len(defects) == 3 * SMALL["test_defect_count"] and not set(defects) & set(easy)


def test_hard_defects_change_their_mask_subtly_but_visibly_at_64px_and_nothing_far_from_it() -> None:
    weakest_strong = np.inf
    for category, (photo_name, tint, _) in DEMO_SOURCES.items():
        photo, tint = _load_photo(photo_name), np.array(tint, dtype=np.float32)
        rng = np.random.default_rng([7, zlib.crc32(category.encode())])
        for name in STRONG:
            image = _normal_image(photo, tint, 128, rng)
            painted, mask = draw_defect(name, image, rng)
            weakest_strong = min(weakest_strong, np.abs(painted - image).max(axis=2)[mask].mean())
        hardest = 0.0
        for name in HARD_DEFECTS:
            for _ in range(3):
                image = _normal_image(photo, tint, 128, rng)
                painted, mask = draw_defect(name, image, rng, HARD_DEFECTS)
                assert painted.shape == image.shape and mask.shape == (128, 128) and mask.any()
                change = np.abs(painted - image).max(axis=2)
                # beyond the soft edge (blob blur, anti-aliasing: under 3 px at 128) the normal image, exactly
                far = ~ndimage.binary_dilation(mask, iterations=3)
                assert change[far].max() == 0.0, f"{category}/{name} changed pixels far from its mask"
                assert change[mask].mean() >= 4 * QUANTUM, f"{category}/{name} barely changes its mask"
                mask64 = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((64, 64), Image.BILINEAR))
                change64 = np.abs(_to_64(painted) - _to_64(image)).max(axis=2)[mask64 >= 128]
                assert change64.mean() >= 4 * QUANTUM, f"{category}/{name} is lost at the small preset's 64 px"
                hardest = max(hardest, change[mask].mean())
        assert hardest < weakest_strong  # subtle: every hard defect is fainter than every gross easy one


def test_command_line_builds_the_hard_demo(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = [str(tmp_path / "hard"), "--difficulty", "hard", "--image-size", "32", "--train-count", "2",
            "--test-good-count", "1", "--stage1-count", "2", "--categories", "gravel"]
    assert main(argv) == 0
    assert "hard demo dataset ready" in capsys.readouterr().out
    params = read_demo_params(tmp_path / "hard")
    assert params["difficulty"] == "hard" and params["test_defect_count"] == 5 * len(HARD_DEFECTS)  # the default
    assert build_dataset("demo_hard", tmp_path / "hard", "gravel", "test", 32).labels.sum() == 5 * len(HARD_DEFECTS)
