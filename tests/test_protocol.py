"""The reference's evaluation protocol: MVTec pixel metrics on the centre 224/256 of the map, others uncropped."""

import pytest

from dsr.protocol import evaluation_crop
from studies.runner.trial import resolve_config


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
