"""Feature-space anomalies, on the real tiny DiscreteLatentModel and on a minimal stand-in with the same API."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from dsr.anomalies import BOTH, HI_ONLY, LO_ONLY, STRATEGIES, feature_anomalies, make_strategy
from dsr.anomalies.feature import draw_levels, pool_mask
from dsr.config import DSRConfig, preset

CONFIG = preset("tiny")  # 32x32 images, hi 8x8, lo 4x4, K = 32, D = 8


class StandInQuantizer:
    def __init__(self, k: int, d: int, g: torch.Generator) -> None:
        self.codebook = torch.randn(k, d, generator=g)

    def quantize_indices(self, z: torch.Tensor) -> torch.Tensor:
        d = ((z.permute(0, 2, 3, 1)[..., None, :] - self.codebook) ** 2).sum(-1)
        return d.argmin(-1)

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        return self.codebook[self.quantize_indices(z)].permute(0, 3, 1, 2)


class StandInLatent:
    """Only what feature_anomalies uses: quantizer_lo/hi (codebook, quantize_indices) and z_hi_from."""

    def __init__(self, config: DSRConfig) -> None:
        g = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        self.quantizer_lo = StandInQuantizer(config.codebook_size, config.embedding_dim, g)
        self.quantizer_hi = StandInQuantizer(config.codebook_size, config.embedding_dim, g)
        self.up = nn.ConvTranspose2d(config.embedding_dim, config.embedding_dim, 4, 2, 1)
        self.mix = nn.Conv2d(config.vq_hidden + config.embedding_dim, config.embedding_dim, 1)
        self.features = nn.Conv2d(3, config.vq_hidden, 4, 4)
        self.lo = nn.Conv2d(config.vq_hidden, config.embedding_dim, 2, 2)

    def z_hi_from(self, features_hi: torch.Tensor, q_lo: torch.Tensor) -> torch.Tensor:
        return self.mix(torch.cat((features_hi, self.up(q_lo)), 1))

    def encode(self, images: torch.Tensor) -> SimpleNamespace:
        features_hi = self.features(images)
        z_lo = self.lo(features_hi)
        q_lo = self.quantizer_lo.quantize(z_lo)
        z_hi = self.z_hi_from(features_hi, q_lo)
        return SimpleNamespace(features_hi=features_hi, z_lo=z_lo, q_lo=q_lo, z_hi=z_hi,
                               q_hi=self.quantizer_hi.quantize(z_hi))


def _real_latent() -> nn.Module:
    from dsr.model import DSR
    torch.manual_seed(0)
    return DSR(CONFIG).latent.eval()


@pytest.fixture(params=["stand_in", "real"])
def latent(request):
    return StandInLatent(CONFIG) if request.param == "stand_in" else _real_latent()


def _masks(b: int = 12) -> torch.Tensor:
    """Rectangles at random places; sample 0 empty."""
    g = torch.Generator().manual_seed(1)
    masks = torch.zeros(b, 1, 32, 32)
    for i in range(1, b):  # test fixture only
        y, x = torch.randint(0, 24, (2,), generator=g).tolist()
        h, w = torch.randint(3, 9, (2,), generator=g).tolist()
        masks[i, :, y:y + h, x:x + w] = 1.0
    return masks


def _encode(latent, b: int = 12):
    images = torch.rand(b, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        return latent.encode(images)


def _changed(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs().amax(1) > 1e-5  # (B, h, w)


def _block_max(mask: torch.Tensor, factor: int) -> torch.Tensor:
    """Independent pooling: reshape into factor x factor blocks and take the max, then repeat back."""
    b, _, h, w = mask.shape
    pooled = mask.view(b, 1, h // factor, factor, w // factor, factor).amax((3, 5))
    return pooled, pooled.repeat_interleave(factor, 2).repeat_interleave(factor, 3)


def _is_code(q: torch.Tensor, codebook: torch.Tensor, where: torch.Tensor) -> bool:
    rows = q.permute(0, 2, 3, 1)[where]
    return bool(((rows[:, None] - codebook[None]).abs().amax(2).amin(1) < 1e-5).all())


@pytest.mark.parametrize("both_probability", [0.0, 0.5, 1.0])
def test_levels_masks_and_replacements_follow_the_spec(latent, both_probability: float) -> None:
    config = CONFIG.replace(both_levels_probability=both_probability)
    encoding, masks = _encode(latent), _masks()
    out = feature_anomalies(latent, encoding, masks, make_strategy(config), config, torch.Generator().manual_seed(0))
    b = masks.shape[0]
    assert out.q_lo.shape == encoding.q_lo.shape and out.q_hi.shape == encoding.q_hi.shape
    assert out.mask.shape == masks.shape and out.levels.shape == (b,) and out.levels.dtype == torch.long
    assert not out.q_lo.requires_grad and not out.q_hi.requires_grad
    if both_probability == 1.0:
        assert bool((out.levels == BOTH).all())
    if both_probability == 0.0:
        assert not bool((out.levels == BOTH).any())

    pooled_lo, truth_lo = _block_max(masks, 8)
    pooled_hi, truth_hi = _block_max(masks, 4)
    changed_lo = _changed(out.q_lo, encoding.q_lo)
    real_hi_from_new_lo = latent.quantizer_hi.codebook[
        latent.quantizer_hi.quantize_indices(latent.z_hi_from(encoding.features_hi, out.q_lo))].permute(0, 3, 1, 2)
    for i in range(b):  # per-sample checks of the result
        level = int(out.levels[i])
        lo_expected = pooled_lo[i, 0] > 0 if level != HI_ONLY else torch.zeros_like(pooled_lo[i, 0], dtype=torch.bool)
        assert torch.equal(changed_lo[i], lo_expected), f"sample {i} level {level}: wrong lo positions changed"
        if level == LO_ONLY or i == 0:
            assert torch.equal(out.q_hi[i], encoding.q_hi[i])
        elif level == HI_ONLY:
            assert torch.equal(_changed(out.q_hi[i:i + 1], encoding.q_hi[i:i + 1])[0], pooled_hi[i, 0] > 0)
        else:  # BOTH: hi re-quantised from the perturbed lo, then perturbed inside the hi mask
            changed = _changed(out.q_hi[i:i + 1], real_hi_from_new_lo[i:i + 1])[0]
            assert torch.equal(changed, pooled_hi[i, 0] > 0)
        truth = truth_hi[i] if level == HI_ONLY else truth_lo[i]
        assert torch.equal(out.mask[i], truth)
    assert _is_code(out.q_lo, latent.quantizer_lo.codebook, changed_lo)
    assert _is_code(out.q_hi, latent.quantizer_hi.codebook, pooled_hi[:, 0] > 0)


def test_empty_masks_leave_q_untouched(latent) -> None:
    encoding = _encode(latent, 4)
    out = feature_anomalies(latent, encoding, torch.zeros(4, 1, 32, 32), make_strategy(CONFIG), CONFIG,
                            torch.Generator().manual_seed(0))
    assert torch.equal(out.q_lo, encoding.q_lo) and torch.equal(out.q_hi, encoding.q_hi)
    assert float(out.mask.sum()) == 0


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_reproducible_for_every_strategy(latent, name: str) -> None:
    config = CONFIG.replace(sampling_strategy=name)
    encoding, masks = _encode(latent), _masks()
    a = feature_anomalies(latent, encoding, masks, make_strategy(config), config, torch.Generator().manual_seed(3))
    b = feature_anomalies(latent, encoding, masks, make_strategy(config), config, torch.Generator().manual_seed(3))
    c = feature_anomalies(latent, encoding, masks, make_strategy(config), config, torch.Generator().manual_seed(4))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a.q_lo, c.q_lo) or not torch.equal(a.q_hi, c.q_hi)


def test_real_model_codebooks_are_not_updated() -> None:
    latent = _real_latent().train()  # even in training mode the EMA codebooks must not move
    encoding = _encode(latent.eval())
    latent.train()
    before = [t.clone() for t in latent.state_dict().values()]
    feature_anomalies(latent, encoding, _masks(), make_strategy(CONFIG), CONFIG, torch.Generator().manual_seed(0))
    assert all(torch.equal(x, y) for x, y in zip(before, latent.state_dict().values()))


def test_level_probabilities() -> None:
    n = 40000
    for p in (0.5, 0.2):
        levels = draw_levels(n, p, torch.Generator().manual_seed(0))
        fractions = torch.bincount(levels, minlength=3).double() / n
        expected = torch.tensor([p, (1 - p) / 2, (1 - p) / 2], dtype=torch.float64)
        assert bool(((fractions - expected).abs() < 0.01).all()), fractions


def test_pool_mask_matches_block_max() -> None:
    masks = (torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0)) > 0.97).float()
    for factor in (4, 8):
        assert torch.equal(pool_mask(masks, (32 // factor, 32 // factor)), _block_max(masks, factor)[0])
    with pytest.raises(ValueError, match="multiple"):
        pool_mask(masks, (5, 5))


def test_bad_mask_shape_raises(latent) -> None:
    with pytest.raises(ValueError, match="mask"):
        feature_anomalies(latent, _encode(latent, 2), torch.zeros(2, 32, 32), make_strategy(CONFIG), CONFIG,
                          torch.Generator())
