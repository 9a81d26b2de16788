"""evaluate_model with the real DSR on a small demo build: every metric defined and in [0, 1]."""

import math

import torch

from dsr import DSR, preset
from dsr.data import build_dataset, build_demo
from dsr.evaluation.evaluate import evaluate_model


def test_evaluate_real_model_on_demo(tmp_path) -> None:
    root = build_demo(tmp_path / "demo", categories=("brick",), image_size=64, train_count=4, test_good_count=3,
                      test_defect_count=3)
    test = build_dataset("demo", root, "brick", "test", 64)
    torch.manual_seed(0)
    model = DSR(preset("tiny")).eval()
    metrics = evaluate_model(model, test, batch_size=4, center_crop=48)
    assert set(metrics) == {"image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "aupro"}
    assert all(not math.isnan(v) and 0.0 <= v <= 1.0 for v in metrics.values())
    assert model.training is False
