"""Feature-space anomalies: replace quantised codes inside a mask with codes a strategy picks (the heart of DSR).

Spec ("Feature-space anomaly generation"): per sample choose the level(s) to perturb, max-pool the image mask
to each latent size, and set anomalous = m * codebook[sampled] + (1 - m) * Q at that level; for "both", lo is
perturbed first and the hi feature is recomputed from the perturbed lo, quantised, then perturbed.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from dsr.anomalies import _random
from dsr.anomalies.strategies import SamplingStrategy
from dsr.config import DSRConfig

BOTH, LO_ONLY, HI_ONLY = 0, 1, 2  # values of FeatureAnomalies.levels


class FeatureAnomalies(NamedTuple):
    q_hi: Tensor  # (B, D, H/4, W/4) anomalous (or real) quantised hi features
    q_lo: Tensor  # (B, D, H/8, W/8)
    mask: Tensor  # (B, 1, H, W) ground truth: the pooled mask of the level used, upsampled (nearest)
    levels: Tensor  # (B,) long: 0 = both, 1 = lo only, 2 = hi only


def draw_levels(batch_size: int, both_probability: float, generator: torch.Generator,
                device: torch.device | str = "cpu") -> Tensor:
    """(B,) long levels: BOTH with `both_probability`, else LO_ONLY or HI_ONLY with equal chance."""
    both = _random.uniform((batch_size,), generator, device) < both_probability
    lo = _random.uniform((batch_size,), generator, device) < 0.5
    return torch.where(both, BOTH, torch.where(lo, LO_ONLY, HI_ONLY)).long()


def pool_mask(mask: Tensor, size: tuple[int, int]) -> Tensor:
    """Max-pool an image mask (B,1,H,W) to a latent size (h, w) that divides it (x8 for lo, x4 for hi)."""
    h, w = mask.shape[-2:]
    if h % size[0] or w % size[1] or h // size[0] != w // size[1]:
        raise ValueError(f"mask size {(h, w)} is not an integer multiple of the latent size {size}")
    return F.max_pool2d(mask, kernel_size=h // size[0])


def perturb(z: Tensor, q: Tensor, mask: Tensor, codebook: Tensor, strategy: SamplingStrategy,
            generator: torch.Generator) -> Tensor:
    """m * codebook[strategy(z)] + (1 - m) * q at the positions where the pooled mask (B,1,h,w) is non-zero.

    z, q: (B, D, h, w) pre-quantisation and quantised features of one level; returns a new (B, D, h, w).
    """
    b = z.shape[0]
    where = mask[:, 0] > 0  # (B, h, w)
    z_rows = z.permute(0, 2, 3, 1)[where]  # (N, D)
    sample_ids = where.nonzero()[:, 0]
    index = strategy.sample(z_rows, codebook, sample_ids, b, generator)  # (N,)
    m = mask[:, 0][where][:, None]  # (N, 1)
    out = q.permute(0, 2, 3, 1).clone()  # (B, h, w, D)
    out[where] = m * codebook[index].to(q.dtype) + (1.0 - m) * out[where]
    return out.permute(0, 3, 1, 2).contiguous()


def _per_sample(flags: Tensor) -> Tensor:
    """(B,) bool -> (B, 1, 1, 1) float, to switch a sample's mask on or off."""
    return flags.float()[:, None, None, None]


@torch.no_grad()
def feature_anomalies(latent: Any, encoding: Any, mask: Tensor, strategy: SamplingStrategy, config: DSRConfig,
                      generator: torch.Generator, levels: Tensor | None = None) -> FeatureAnomalies:
    """Anomalous quantised features of a batch, given the frozen latent model and its encoding of the images.

    latent: a DiscreteLatentModel (uses quantizer_lo/hi.codebook, quantizer_hi.quantize_indices, z_hi_from);
    encoding: its LatentEncoding of the batch (z_lo, q_lo, z_hi, q_hi, features_hi); mask: (B, 1, H, W) in
    [0, 1], e.g. from perlin_masks. Levels follow config.both_levels_probability. Samples with an empty mask
    keep their real Q at both levels. Runs under no_grad; the quantisers' EMA state is not touched.
    levels: (B,) long BOTH / LO_ONLY / HI_ONLY to use instead of drawing them (replaying a given draw, e.g. the
    reference code's in tests/training/test_training_parity.py); then nothing is drawn for them.
    """
    q_lo, q_hi = encoding.q_lo, encoding.q_hi
    b = q_lo.shape[0]
    if mask.ndim != 4 or mask.shape[0] != b or mask.shape[1] != 1:
        raise ValueError(f"mask must be (B, 1, H, W) with B = {b}, got {tuple(mask.shape)}")
    if levels is None:
        levels = draw_levels(b, config.both_levels_probability, generator, q_lo.device)
    elif levels.shape != (b,) or bool(((levels < BOTH) | (levels > HI_ONLY)).any()):
        raise ValueError(f"levels must be (B,) = ({b},) values in {{BOTH, LO_ONLY, HI_ONLY}}, got {levels.tolist()}")
    levels = levels.to(q_lo.device).long()
    mask = mask.to(q_lo.dtype)
    mask_lo = pool_mask(mask, tuple(q_lo.shape[-2:]))  # (B, 1, H/8, W/8)
    mask_hi = pool_mask(mask, tuple(q_hi.shape[-2:]))  # (B, 1, H/4, W/4)
    anomalous = mask.flatten(1).amax(1) > 0  # (B,)

    new_lo = perturb(encoding.z_lo, q_lo, mask_lo * _per_sample(levels != HI_ONLY), latent.quantizer_lo.codebook,
                     strategy, generator)

    z_hi, base_hi = encoding.z_hi, q_hi
    both = (levels == BOTH) & anomalous
    if both.any():  # z_hi from the perturbed lo, quantised with the frozen hi codebook
        codebook_hi = latent.quantizer_hi.codebook
        z_both = latent.z_hi_from(encoding.features_hi[both], new_lo[both])
        q_both = codebook_hi[latent.quantizer_hi.quantize_indices(z_both)].permute(0, 3, 1, 2).to(q_hi.dtype)
        z_hi, base_hi = z_hi.clone(), q_hi.clone()
        z_hi[both], base_hi[both] = z_both.to(z_hi.dtype), q_both
    new_hi = perturb(z_hi, base_hi, mask_hi * _per_sample(levels != LO_ONLY), latent.quantizer_hi.codebook,
                     strategy, generator)

    size = tuple(mask.shape[-2:])
    truth_lo = F.interpolate(mask_lo, size=size, mode="nearest")
    truth_hi = F.interpolate(mask_hi, size=size, mode="nearest")
    truth = torch.where((levels == HI_ONLY)[:, None, None, None], truth_hi, truth_lo)
    return FeatureAnomalies(q_hi=new_hi, q_lo=new_lo, mask=truth, levels=levels)
