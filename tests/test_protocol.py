"""The reference's evaluation protocol: MVTec pixel metrics on the centre 224/256 of the map, others uncropped."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dsr.config import DSRConfig
from dsr.data import build_dataset
from dsr.evaluation.evaluate import evaluate_model, metrics_from_predictions, predict_all
from dsr.protocol import evaluation_crop
from studies.runner.trial import resolve_config
from tests.data.data_helpers import write_mask, write_png


@pytest.mark.parametrize(("kind", "size", "crop"), [("mvtec", 256, 224), ("mvtec", 64, 56), ("ksdd2", 256, None),
                                                    ("folder", 256, None), ("demo", 64, None)])
def test_evaluation_crop_follows_the_reference(kind: str, size: int, crop: int | None) -> None:
    assert evaluation_crop(kind, size) == crop


def test_trials_on_mvtec_crop_unless_overridden() -> None:
    trial = {"preset": "paper", "variant": "DSR", "dataset": "mvtec", "seed": 0, "overrides": {}}
    assert resolve_config(trial).eval_center_crop == 224
    assert resolve_config({**trial, "overrides": {"eval_center_crop": None}}).eval_center_crop is None
    assert resolve_config({**trial, "dataset": "ksdd2"}).eval_center_crop is None


def test_paper_preset_follows_the_paper_protocol() -> None:
    config = resolve_config({"preset": "paper", "variant": "DSR", "dataset": "mvtec", "seed": 0})
    assert config.similarity_bound == 0.05  # Table 6's DSR row is Table 5's lambda_s = 0.05
    assert config.antialias is False  # the reference resizes with plain bilinear interpolation
    assert config.stage3_lr_decay_at == 1.0  # the reference's stage-3 learning rate never decays


class _ImageIsTheMap(torch.nn.Module):
    """A stand-in detector: the map is the image's red channel, the score its mean (deterministic, no training)."""

    def predict(self, images: torch.Tensor) -> SimpleNamespace:
        maps = images[:, 0]
        return SimpleNamespace(pixel_maps=maps, image_scores=maps.mean(dim=(1, 2)))


def _noise_category(base: Path, size: int = 64) -> None:
    """An MVTec-layout category of noise images; defect masks both inside and outside the 7/8 centre crop."""
    rng = np.random.default_rng(0)
    boxes = {"border": (0, 0, 4, 20), "centre": (24, 24, 40, 40)}
    for split, folder, count in (("train", "good", 2), ("test", "good", 3), ("test", "border", 2),
                                 ("test", "centre", 2)):
        for i in range(count):
            write_png(base / split / folder / f"{i:03d}.png",
                      array=rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
            if folder in boxes:
                x0, y0, x1, y1 = boxes[folder]
                write_mask(base / "ground_truth" / folder / f"{i:03d}_mask.png", (size, size), (x0, y0, x1, y1))


def test_notebook_path_follows_the_protocol(tmp_path: Path) -> None:
    """Through `dsr` alone: DSRConfig() and the loaders resize without antialiasing, and evaluate_model crops MVTec
    pixel metrics to the reference's centre (7/8 of the side) while a user folder of the same files is uncropped."""
    config = DSRConfig()
    assert config.antialias is False and config.eval_center_crop == "protocol"
    _noise_category(tmp_path / "mvtec" / "noise")
    mvtec_test = build_dataset("mvtec", tmp_path / "mvtec", "noise", "test", 32)
    folder_test = build_dataset("folder", tmp_path / "mvtec" / "noise", None, "test", 32)

    file = mvtec_test.samples[0].image_path
    pixels = torch.from_numpy(np.array(Image.open(file))).permute(2, 0, 1).float()[None] / 255
    plain = F.interpolate(pixels, size=(32, 32), mode="bilinear", align_corners=False, antialias=False)[0]
    assert torch.equal(mvtec_test[0]["image"], plain.clamp(0, 1))  # the loaders' default is the protocol's resize

    model = _ImageIsTheMap()
    scores, maps, labels, masks = predict_all(model, mvtec_test)
    cropped = metrics_from_predictions(scores, maps, labels, masks, True, center_crop=28)
    whole = metrics_from_predictions(scores, maps, labels, masks, True, center_crop=None)
    assert cropped["pixel_auroc"] != whole["pixel_auroc"]  # the border defect only counts uncropped
    assert evaluate_model(model, mvtec_test) == cropped
    assert evaluate_model(model, folder_test) == whole
    assert evaluate_model(model, mvtec_test, center_crop=None) == whole
