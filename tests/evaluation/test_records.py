"""Per-image evaluation records: the same metrics as evaluate_model, a faithful pixel subsample, a lossless file."""

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from dsr import DSR, preset
from dsr.data import AnomalyDataset, Sample
from dsr.evaluation import EvaluationRecords, evaluate_model, evaluate_with_records, load_records, save_records
from dsr.evaluation.records import sample_pixels


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> AnomalyDataset:
    from PIL import Image

    root = tmp_path_factory.mktemp("records")
    rng = np.random.default_rng(0)
    samples = []
    for i, kind in enumerate(["good", "good", "good", "crack", "crack"]):
        folder = root / kind
        folder.mkdir(exist_ok=True)
        image = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"{i:03d}.png")
        mask_path = None
        if kind != "good":
            mask = np.zeros((64, 64), np.uint8)
            mask[10 + i:30, 20:40] = 255
            mask_path = folder / f"{i:03d}_mask.png"
            Image.fromarray(mask).save(mask_path)
        samples.append(Sample(folder / f"{i:03d}.png", int(kind != "good"), mask_path, "toy", kind))
    return AnomalyDataset(samples, image_size=64)


def test_records_give_evaluate_models_metrics_and_survive_a_round_trip(dataset, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = DSR(preset("tiny")).eval()
    metrics, records = evaluate_with_records(model, dataset, center_crop=56)
    expected = evaluate_model(model, dataset, center_crop=56)
    assert metrics == pytest.approx(expected, nan_ok=True)
    by_defect = evaluate_model(model, dataset, center_crop=56, by_defect=True)
    assert by_defect["image_auroc/crack"] == pytest.approx(records.by_defect()["crack"]["image_auroc"])
    assert by_defect["pixel_ap/crack"] == pytest.approx(records.by_defect()["crack"]["pixel_ap"])
    assert len(records) == 5 and records.labels.tolist() == [0, 0, 0, 1, 1]
    assert records.paths[3] == "crack/003.png" and records.defect_types.tolist()[3] == "crack"
    assert records.images.shape == (5, 64, 64, 3) and records.maps.dtype == np.uint8
    assert records.center_crop == 56 and records.has_masks
    loaded = load_records(save_records(records, tmp_path / "records.npz"))
    for name in ("paths", "labels", "image_scores", "pixel_scores", "pixel_labels", "images", "masks", "maps",
                 "defect_names", "defect_image_auroc", "defect_pixel_ap"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(records, name), err_msg=name)
    assert loaded.center_crop == 56 and loaded.has_masks is True


def test_pixel_subsample_keeps_anomalous_pixels_and_tracks_pixel_ap() -> None:
    rng = np.random.default_rng(1)
    masks = np.zeros((20, 32, 32), bool)
    masks[:, 8:12, 8:14] = True  # 24 anomalous pixels of 1024 per image
    maps = rng.random((20, 32, 32)) * 0.6 + masks * 0.3
    scores, labels = sample_pixels(maps, masks, 256, seed=0)
    assert scores.shape == (20, 256) and labels.sum(1).tolist() == [24] * 20  # every anomalous pixel kept
    full = average_precision_score(masks.ravel(), maps.ravel())
    # the subsample has ~10x the anomalous fraction, so its AP is higher; its ranking must agree with full maps
    worse = maps + rng.random(maps.shape) * 0.5
    sub_worse = sample_pixels(worse, masks, 256, seed=0)[0]
    assert average_precision_score(labels.ravel(), scores.ravel()) > average_precision_score(labels.ravel(),
                                                                                             sub_worse.ravel())
    assert full > average_precision_score(masks.ravel(), worse.ravel())


def test_a_file_that_is_not_records_is_named(tmp_path: Path) -> None:
    path = tmp_path / "other.npz"
    np.savez(path, x=np.arange(3))
    with pytest.raises(ValueError, match="other.npz"):
        load_records(path)


def test_without_masks_pixel_metrics_are_not_defined_and_image_metrics_are(dataset, recwarn) -> None:
    unmasked = AnomalyDataset([Sample(s.image_path, s.label, None, s.category, s.defect_type)
                               for s in dataset.samples], image_size=64)
    torch.manual_seed(0)
    model = DSR(preset("tiny")).eval()
    masked_metrics = evaluate_model(model, dataset)
    metrics, records = evaluate_with_records(model, unmasked)
    assert metrics["image_auroc"] == pytest.approx(masked_metrics["image_auroc"])
    assert all(np.isnan(metrics[name]) for name in ("pixel_auroc", "pixel_ap", "aupro"))
    assert not records.has_masks
    assert not [w for w in recwarn if "pixel" in str(w.message).lower()]  # by design, not a warning


def _scored(types: list[str], scores: list[float]) -> EvaluationRecords:
    """Hand-made records of len(types) images with the given image scores (no stored per-defect values)."""
    n = len(types)
    labels = np.array([t != "good" for t in types], np.int8)
    return EvaluationRecords(
        paths=np.array([f"{t}/{i:03d}.png" for i, t in enumerate(types)]), defect_types=np.array(types),
        labels=labels, image_scores=np.array(scores, np.float32), pixel_scores=np.zeros((n, 4), np.float16),
        pixel_labels=np.zeros((n, 4), bool), has_masks=True, center_crop=0,
        images=np.zeros((n, 2, 2, 3), np.uint8), masks=np.zeros((n, 2, 2), np.uint8), maps=np.zeros((n, 2, 2), np.uint8))


def test_each_defect_type_is_scored_against_every_normal_image() -> None:
    """A model that catches cracks and misses holes: the category AUROC hides it, the breakdown shows it."""
    from dsr.evaluation.evaluate import defect_metrics

    types = ["good"] * 4 + ["crack"] * 2 + ["hole"] * 2
    scores = np.array([0.30, 0.32, 0.34, 0.36, 0.9, 0.8, 0.31, 0.33])
    maps = np.zeros((8, 4, 4))
    masks = np.zeros((8, 4, 4), bool)
    masks[4:, :2] = True
    maps[4:6, :2] = 1.0  # crack maps right, hole maps empty
    labels = np.array([t != "good" for t in types])
    per = defect_metrics(scores, maps, labels, masks, types)
    assert list(per) == ["crack", "hole"]
    assert per["crack"]["image_auroc"] == pytest.approx(1.0)
    assert per["hole"]["image_auroc"] == pytest.approx(3 / 8)  # 0.31 beats one normal score, 0.33 two: 3 of 8 pairs
    assert per["crack"]["pixel_ap"] == pytest.approx(1.0) and per["hole"]["pixel_ap"] < 0.3
    with pytest.raises(ValueError, match="labels disagree"):
        defect_metrics(scores, maps, ~labels, masks, types)
    # the same from records that store no per-defect values: image AUROC from the scores, pixel AP not guessed
    records = _scored(types, scores.tolist())
    assert records.by_defect()["hole"]["image_auroc"] == pytest.approx(3 / 8)
    assert np.isnan(records.by_defect()["hole"]["pixel_ap"])
    hole = records.of_defect("hole")
    assert hole.defect_types.tolist() == ["good"] * 4 + ["hole"] * 2 and hole.image_scores.shape == (6,)
    with pytest.raises(ValueError, match="no test images of defect type 'dent'"):
        records.of_defect("dent")


def test_records_of_format_1_still_load(tmp_path: Path) -> None:
    """Records written before the per-defect fields: readable, image AUROC per defect from their scores."""
    from dataclasses import fields

    old = _scored(["good", "good", "hole"], [0.1, 0.3, 0.2])
    values = {f.name: getattr(old, f.name) for f in fields(old) if not f.name.startswith("defect_")
              or f.name == "defect_types"}
    values.update(has_masks=np.array(True), center_crop=np.array(0))
    np.savez_compressed(tmp_path / "old.npz", format=np.array("dsr-studies/records/1"), **values)
    loaded = load_records(tmp_path / "old.npz")
    assert loaded.by_defect()["hole"]["image_auroc"] == pytest.approx(0.5) and len(loaded.defect_names) == 0
