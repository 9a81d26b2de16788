"""MVTec / folder / KSDD2 loaders, the dataset items, load_all and every bad-input error."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import make_category, make_ksdd2, write_mask, write_png

from dsr.data import (
    DATASET_KINDS, MVTEC_CATEGORIES, AnomalyDataset, Sample, build_dataset, folder, ksdd2, list_categories,
    load_all, mvtec,
)


def _snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Content hash (files) and mtime (files and folders: it changes when an entry is added) under root."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir",
                                       p.stat().st_mtime_ns)
            for p in sorted([root, *root.rglob("*")])}


def test_canonical_categories() -> None:
    assert len(MVTEC_CATEGORIES) == 15 and len(set(MVTEC_CATEGORIES)) == 15
    assert {"bottle", "metal_nut", "zipper"} <= set(MVTEC_CATEGORIES)


def test_mvtec_train_and_test_samples(mvtec_root: Path) -> None:
    train = mvtec(mvtec_root, "carpet", "train", image_size=8)
    assert len(train) == 2 and train.labels.tolist() == [0, 0]
    test = mvtec(mvtec_root, "carpet", "test", image_size=8)
    by_type = {s.defect_type: s for s in test.samples}
    assert sorted(by_type) == ["cut", "good", "hole"]
    assert by_type["good"].label == 0 and by_type["good"].mask_path is None
    assert by_type["cut"].label == 1
    assert by_type["cut"].mask_path == mvtec_root / "carpet" / "ground_truth" / "cut" / "000_mask.png"
    assert all(s.category == "carpet" for s in test.samples)


def test_items_shapes_ranges_and_masks(mvtec_root: Path) -> None:
    test = mvtec(mvtec_root, "bottle", "test", image_size=16)
    for item in (test[i] for i in range(len(test))):
        assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.float32
        assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
        assert item["mask"].shape == (1, 16, 16)
        assert set(item["mask"].unique().tolist()) <= {0.0, 1.0}
        assert isinstance(item["label"], int) and isinstance(item["path"], str)
        assert (item["mask"].sum() > 0) == (item["label"] == 1)
    defect = next(test[i] for i in range(len(test)) if test[i]["label"] == 1)
    # the 12x10 mask has a 4x3 box; resized to 16x16 with nearest it keeps roughly that area fraction
    assert defect["mask"].mean().item() == pytest.approx(12 / 120, abs=0.04)
    assert torch.allclose(defect["image"][:, 0, 0], torch.tensor([200, 50, 40]) / 255.0, atol=1e-6)


def test_bgr_swaps_channels(mvtec_root: Path) -> None:
    rgb = mvtec(mvtec_root, "bottle", "test", image_size=8, channel_order="rgb")
    bgr = mvtec(mvtec_root, "bottle", "test", image_size=8, channel_order="bgr")
    assert torch.equal(bgr[3]["image"], rgb[3]["image"].flip(0))
    assert not torch.equal(bgr[3]["image"], rgb[3]["image"])


def test_grayscale_and_rgba_images_become_rgb(tmp_path: Path) -> None:
    base = make_category(tmp_path / "cat", train=0, good=0, defects={})
    write_png(base / "train" / "good" / "gray.png", mode="L", value=77)
    write_png(base / "train" / "good" / "rgba.png", mode="RGBA", value=(10, 20, 30, 255))
    data = folder(base, "train", image_size=4)
    images = {Path(data[i]["path"]).stem: data[i]["image"] for i in range(len(data))}
    assert torch.allclose(images["gray"], torch.full((3, 4, 4), 77 / 255))
    assert torch.allclose(images["rgba"][:, 0, 0], torch.tensor([10, 20, 30]) / 255)


def test_natural_file_order(tmp_path: Path) -> None:
    base = tmp_path / "cat"
    for name in ("10", "2", "1"):
        write_png(base / "train" / "good" / f"{name}.png")
    (base / "train" / "good" / "notes.txt").write_text("other extensions are ignored")
    (base / "train" / "good" / ".hidden.png").write_bytes(b"")
    data = folder(base, "train", image_size=4)
    assert [s.image_path.stem for s in data.samples] == ["1", "2", "10"]


def test_load_all_matches_items(mvtec_root: Path) -> None:
    test = mvtec(mvtec_root, "carpet", "test", image_size=8)
    tensors = load_all(test, progress=False)
    assert tensors.images.shape == (4, 3, 8, 8) and tensors.masks.shape == (4, 1, 8, 8)
    assert tensors.labels.tolist() == test.labels.tolist()
    for i in range(len(test)):
        assert torch.equal(tensors.images[i], test[i]["image"]) and torch.equal(tensors.masks[i], test[i]["mask"])


def test_loading_never_writes_to_the_data_folder(mvtec_root: Path) -> None:
    before = _snapshot(mvtec_root)
    for split in ("train", "test"):
        data = build_dataset("mvtec", mvtec_root, "bottle", split, image_size=8)
        data.validate()
        load_all(data, progress=False)
    list_categories("mvtec", mvtec_root)
    assert _snapshot(mvtec_root) == before


# --- errors -------------------------------------------------------------------------------------------------------


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope"))):
        mvtec(tmp_path / "nope", "bottle", "train")


def test_bad_split_and_options(mvtec_root: Path) -> None:
    with pytest.raises(ValueError, match="split"):
        mvtec(mvtec_root, "bottle", "val")
    with pytest.raises(ValueError, match="channel_order"):
        mvtec(mvtec_root, "bottle", "train", channel_order="rbg")
    with pytest.raises(ValueError, match="image_size"):
        mvtec(mvtec_root, "bottle", "train", image_size=0)


def test_corrupt_image_is_reported_on_load_and_by_validate(mvtec_root: Path) -> None:
    bad = mvtec_root / "bottle" / "train" / "good" / "001.png"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated
    data = mvtec(mvtec_root, "bottle", "train", image_size=8)
    with pytest.raises(ValueError, match=re.escape(str(bad)) + ".*corrupt"):
        data.validate()
    with pytest.raises(ValueError, match=re.escape(str(bad)) + ".*corrupt"):
        data[1]
    bad.write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        data.validate()


def test_mask_without_image(mvtec_root: Path) -> None:
    stray = write_mask(mvtec_root / "bottle" / "ground_truth" / "scratch" / "007_mask.png")
    with pytest.raises(ValueError, match=re.escape(str(stray)) + ".*has no image"):
        mvtec(mvtec_root, "bottle", "test")
    stray.unlink()
    orphan = write_mask(mvtec_root / "bottle" / "ground_truth" / "dent" / "000_mask.png")
    with pytest.raises(ValueError, match=re.escape(str(orphan)) + ".*has no image"):
        mvtec(mvtec_root, "bottle", "test")


def test_masks_for_some_anomalous_images_only_name_one_of_each(mvtec_root: Path) -> None:
    mask = mvtec_root / "carpet" / "ground_truth" / "hole" / "001_mask.png"
    mask.unlink()
    with pytest.raises(FileNotFoundError, match=r"anomalous test image .*hole.001\.png has no mask.*001_mask\.png"
                                                r".* but .*has one"):
        mvtec(mvtec_root, "carpet", "test")


def test_a_category_without_masks_is_an_image_level_dataset(mvtec_root: Path) -> None:
    shutil.rmtree(mvtec_root / "carpet" / "ground_truth")
    test = mvtec(mvtec_root, "carpet", "test", image_size=8)
    assert not test.has_masks and int(test.labels.sum()) == 3
    assert all(s.mask_path is None for s in test.samples)
    assert mvtec(mvtec_root, "bottle", "test", image_size=8).has_masks


def test_dataset_masks_are_all_or_none(tmp_path: Path) -> None:
    image, other = write_png(tmp_path / "a.png"), write_png(tmp_path / "b.png")
    mask = write_mask(tmp_path / "b_mask.png")
    assert not AnomalyDataset([Sample(image, 1, None, "c", "cut")]).has_masks
    with pytest.raises(ValueError, match=r"a\.png has no mask but .*b\.png has one"):
        AnomalyDataset([Sample(image, 1, None, "c", "cut"), Sample(other, 1, mask, "c", "cut")])
    with pytest.raises(ValueError, match="zero images"):
        AnomalyDataset([])


def test_empty_folders(mvtec_root: Path) -> None:
    for p in (mvtec_root / "bottle" / "train" / "good").iterdir():
        p.unlink()
    with pytest.raises(ValueError, match=r"zero images in .*bottle/train/good"):
        mvtec(mvtec_root, "bottle", "train")
    shutil.rmtree(mvtec_root / "bottle" / "test")
    shutil.rmtree(mvtec_root / "bottle" / "ground_truth")
    (mvtec_root / "bottle" / "test" / "good").mkdir(parents=True)
    with pytest.raises(ValueError, match="zero test images"):
        mvtec(mvtec_root, "bottle", "test")


def test_root_at_the_wrong_level(mvtec_root: Path) -> None:
    with pytest.raises(FileNotFoundError, match="looks like a category folder: pass its parent"):
        mvtec(mvtec_root / "bottle", "bottle", "train")
    with pytest.raises(FileNotFoundError, match=r"categories present in .*\['bottle', 'carpet'\]"):
        mvtec(mvtec_root, "cable", "train")
    with pytest.raises(FileNotFoundError, match=r"holds category folders \['bottle', 'carpet'\]"):
        folder(mvtec_root, "train")
    with pytest.raises(ValueError, match="itself looks like a category folder"):
        list_categories("mvtec", mvtec_root / "bottle")


def test_images_directly_in_test_folder(mvtec_root: Path) -> None:
    write_png(mvtec_root / "bottle" / "test" / "loose.png")
    with pytest.raises(ValueError, match=r"found images directly in .*test.*expected them in sub-folders"):
        mvtec(mvtec_root, "bottle", "test")


def test_mask_size_differs_from_image(mvtec_root: Path) -> None:
    mask = write_mask(mvtec_root / "bottle" / "ground_truth" / "scratch" / "001_mask.png", size=(10, 10))
    data = mvtec(mvtec_root, "bottle", "test", image_size=8)
    index = next(i for i, s in enumerate(data.samples) if s.mask_path == mask)
    with pytest.raises(ValueError, match=re.escape(str(mask)) + r" is 10x10 but its image .* is 12x10"):
        data.validate()
    with pytest.raises(ValueError, match="must match"):
        data[index]


# --- folder -------------------------------------------------------------------------------------------------------


def test_folder_without_test_good(tmp_path: Path) -> None:
    root = make_category(tmp_path / "my_parts", train=2, good=0, defects={"dent": 2})
    test = folder(root, "test", image_size=8)
    assert test.labels.tolist() == [1, 1] and test.categories == ("my_parts",)
    assert list_categories("folder", root) == ["my_parts"]
    assert len(build_dataset("folder", root, "my_parts", "train", 8)) == 2


# --- KSDD2 --------------------------------------------------------------------------------------------------------


@pytest.fixture
def ksdd2_root(tmp_path: Path) -> Path:
    return make_ksdd2(tmp_path / "KSDD2", anomalous={"train": [10, 2, 30], "test": [7]},
                      normal={"train": [1, 5, 11], "test": [3, 4]})


def test_ksdd2_labels_from_masks(ksdd2_root: Path) -> None:
    test = ksdd2(ksdd2_root, "test", image_size=8)
    assert [(s.image_path.stem, s.label) for s in test.samples] == [("3", 0), ("4", 0), ("7", 1)]
    item = test[2]
    assert item["mask"].sum() > 0 and item["image"].shape == (3, 8, 8)
    assert test[0]["mask"].sum() == 0


def test_ksdd2_unsupervised_train_is_normal_only(ksdd2_root: Path) -> None:
    train = ksdd2(ksdd2_root, "train", image_size=8)
    assert [s.image_path.stem for s in train.samples] == ["1", "5", "11"]
    assert train.labels.sum() == 0


def test_ksdd2_supervised_adds_first_anomalous_in_order(ksdd2_root: Path) -> None:
    train = ksdd2(ksdd2_root, "train", image_size=8, supervised_count=2)
    assert [(s.image_path.stem, s.label) for s in train.samples] == [
        ("1", 0), ("5", 0), ("11", 0), ("2", 1), ("10", 1)]
    assert all(train[i]["mask"].sum() > 0 for i in (3, 4))
    again = build_dataset("ksdd2", ksdd2_root, None, "train", 8, supervised_count=2)
    assert [s.image_path for s in again.samples] == [s.image_path for s in train.samples]
    assert len(ksdd2(ksdd2_root, "test", image_size=8, supervised_count=2)) == 3  # ignored for test
    with pytest.raises(ValueError, match=r"supervised_count=4 but .* has only 3 anomalous"):
        ksdd2(ksdd2_root, "train", supervised_count=4)
    with pytest.raises(ValueError, match="supervised_count must be a non-negative integer"):
        ksdd2(ksdd2_root, "train", supervised_count=-1)


def test_ksdd2_errors(ksdd2_root: Path) -> None:
    (ksdd2_root / "train" / "5_GT.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"image .*5\.png has no mask: expected .*5_GT\.png"):
        ksdd2(ksdd2_root, "train")
    (ksdd2_root / "train" / "5.png").unlink()
    (ksdd2_root / "test" / "3.png").unlink()
    with pytest.raises(ValueError, match=r"mask .*3_GT\.png has no image"):
        ksdd2(ksdd2_root, "test")
    with pytest.raises(FileNotFoundError, match="holds \\['KSDD2'\\]: pass that folder as root"):
        ksdd2(ksdd2_root.parent, "train")


# --- build_dataset / list_categories ------------------------------------------------------------------------------


def test_build_dataset_dispatch_and_errors(mvtec_root: Path, tmp_path: Path) -> None:
    assert DATASET_KINDS == ("mvtec", "ksdd2", "folder", "demo", "demo_hard")
    assert list_categories("mvtec", mvtec_root) == ["bottle", "carpet"]
    data = build_dataset("mvtec", mvtec_root, "carpet", "test", image_size=8, channel_order="bgr")
    assert len(data) == 4 and data.channel_order == "bgr" and data.image_size == 8
    with pytest.raises(ValueError, match="unknown dataset kind 'mvtc'"):
        build_dataset("mvtc", mvtec_root, "carpet")
    with pytest.raises(ValueError, match=r"option\(s\) \['supervised_count'\] not accepted"):
        build_dataset("mvtec", mvtec_root, "carpet", supervised_count=1)
    with pytest.raises(ValueError, match="needs a category"):
        build_dataset("mvtec", mvtec_root)
    with pytest.raises(ValueError, match="single category 'bottle'"):
        build_dataset("folder", mvtec_root / "bottle", "carpet")
    with pytest.raises(FileNotFoundError, match="no finished demo dataset"):
        build_dataset("demo", mvtec_root, "bottle")
    with pytest.raises(FileNotFoundError, match="no finished demo_hard dataset.*--difficulty hard"):
        build_dataset("demo_hard", mvtec_root, "bottle")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no category folders"):
        list_categories("mvtec", empty)


def test_antialias_option_changes_downscaling(tmp_path: Path) -> None:
    stripes = np.zeros((16, 16, 3), dtype=np.uint8)
    stripes[:, ::2] = 255
    base = tmp_path / "stripes"
    write_png(base / "train" / "good" / "0.png", array=stripes)
    smooth = folder(base, "train", image_size=5, antialias=True)[0]["image"]
    sharp = folder(base, "train", image_size=5)[0]["image"]  # the default: the reference's plain resize
    assert torch.allclose(smooth, torch.full_like(smooth, 0.5), atol=0.05)  # stripes averaged away
    assert (sharp - 0.5).abs().max() > 0.3  # plain bilinear samples two pixels: aliasing
    assert os.listdir(base / "train" / "good") == ["0.png"]


def _flat(root: Path, good: int = 10, bad: int = 3) -> Path:
    for i in range(good):
        write_png(root / "good" / f"g{i:02d}.png", value=100 + i)
    for i in range(bad):
        write_png(root / "bad" / f"b{i}.png", value=10 + i)
    return root


def test_flat_good_and_bad_folders_split_seeded_and_saved(tmp_path: Path) -> None:
    root = _flat(tmp_path / "parts")
    train = folder(root, "train", image_size=8)
    test = folder(root, "test", image_size=8)
    train_names = {s.image_path.name for s in train.samples}
    test_good = {s.image_path.name for s in test.samples if s.label == 0}
    assert len(train_names) == 8 and len(test_good) == 2 and not train_names & test_good
    assert sorted(s.image_path.name for s in test.samples if s.label == 1) == ["b0.png", "b1.png", "b2.png"]
    assert not test.has_masks and list_categories("folder", root) == ["parts"]
    assert (root / ".dsr_split.json").is_file()
    write_png(root / "good" / "g99.png")  # added later: test, the train split stays
    assert {s.image_path.name for s in folder(root, "train", image_size=8).samples} == train_names
    assert "g99.png" in {s.image_path.name for s in folder(root, "test", image_size=8).samples}


def test_flat_split_missing_train_image_is_named(tmp_path: Path) -> None:
    root = _flat(tmp_path / "parts")
    first = sorted(s.image_path for s in folder(root, "train", image_size=8).samples)[0]
    first.unlink()
    with pytest.raises(ValueError, match=re.escape(first.name) + ".*no longer in"):
        folder(root, "train", image_size=8)


def test_flat_train_fraction_is_an_option(tmp_path: Path) -> None:
    root = _flat(tmp_path / "parts", good=10)
    train = build_dataset("folder", root, None, "train", 8, train_fraction=0.5)
    assert len(train.samples) == 5
