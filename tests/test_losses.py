import math

import pytest
import torch

from dsr import preset
from dsr.losses import focal_loss, stage2_loss


def test_focal_loss_matches_hand_computation() -> None:
    probs = torch.tensor([0.9, 0.3]).view(1, 1, 1, 2)
    probs = torch.cat((1 - probs, probs), dim=1)  # class-1 probabilities 0.9 and 0.3
    mask = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    s = 1e-5
    p_t = [0.9 * (1 - s) + 0.1 * s + s, 0.7 * (1 - s) + 0.3 * s + s]
    expected = sum(-((1 - p) ** 2) * math.log(p) for p in p_t) / 2
    assert focal_loss(probs, mask).item() == pytest.approx(expected, rel=1e-5)


def test_focal_loss_down_weights_easy_pixels() -> None:
    easy = torch.tensor([[0.05, 0.95]]).view(1, 2, 1, 1)
    hard = torch.tensor([[0.6, 0.4]]).view(1, 2, 1, 1)
    mask = torch.ones(1, 1, 1, 1)
    assert focal_loss(easy, mask, gamma=2) < focal_loss(easy, mask, gamma=0) / 100
    assert focal_loss(hard, mask) > focal_loss(easy, mask)


@pytest.mark.parametrize("feat, img", [(1.0, 10.0), (0.0, 10.0), (1.0, 0.0)])
def test_stage2_loss_weights(feat: float, img: float) -> None:
    config = preset("tiny", loss_feat_weight=feat, loss_img_weight=img)
    g = torch.Generator().manual_seed(0)
    logits, mask = torch.randn(2, 2, 8, 8, generator=g), (torch.rand(2, 1, 8, 8, generator=g) > 0.5).float()
    zh, zl, qh, ql = (torch.randn(2, 4, 4, 4, generator=g) for _ in range(4))
    image, clean = torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 8, 8, generator=g)
    terms = stage2_loss(config, logits, mask, zh, zl, qh, ql, image, clean)
    assert terms.feature.item() == pytest.approx(
        (((zh - qh) ** 2).mean() + ((zl - ql) ** 2).mean()).item() if feat else 0.0, rel=1e-6)
    assert terms.image.item() == pytest.approx(((image - clean) ** 2).mean().item() if img else 0.0, rel=1e-6)
    expected = terms.focal + feat * terms.feature + img * terms.image
    assert terms.total.item() == pytest.approx(expected.item(), rel=1e-6)
