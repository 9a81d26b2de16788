"""Per-image evaluation records: the same metrics as evaluate_model, a faithful pixel subsample, a lossless file."""

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from dsr import DSR, preset
from dsr.data import AnomalyDataset, Sample
from dsr.evaluation import evaluate_model, evaluate_with_records, load_records, save_records
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
    assert len(records) == 5 and records.labels.tolist() == [0, 0, 0, 1, 1]
    assert records.paths[3] == "crack/003.png" and records.defect_types.tolist()[3] == "crack"
    assert records.images.shape == (5, 64, 64, 3) and records.maps.dtype == np.uint8
    assert records.center_crop == 56 and records.has_masks
    loaded = load_records(save_records(records, tmp_path / "records.npz"))
    for name in ("paths", "labels", "image_scores", "pixel_scores", "pixel_labels", "images", "masks", "maps"):
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
