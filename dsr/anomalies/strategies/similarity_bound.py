"""The reference DSR strategy: a random similarity strength per image bounds how far the replacement may be."""

from __future__ import annotations

import torch
from torch import Tensor

from dsr.anomalies import _random
from dsr.anomalies.strategies.base import SamplingStrategy, register


@register("similarity_bound")
class SimilarityBound(SamplingStrategy):
    """Per image s ~ U[lambda_s, 1) (lambda_s = config.similarity_bound); a replacement is drawn uniformly from
    the distance ranks [floor(f*K), min(floor(s*K) + 1, K - 1)), f = config.excluded_nearest_fraction (0.05).

    As in the reference code (its top-k count is capped at K - 1), the farthest code is never drawn.
    Small lambda_s: where floor(s*K) + 1 <= floor(f*K) the reference window is empty. This project then uses
    [floor(f*K), floor(f*K) + 1), i.e. the nearest code that is still allowed (the mildest permitted anomaly):
    the upper end is clamped to at least floor(f*K) + 1. So every lambda_s in (0, 1) works at every K >= 2,
    and a smaller lambda_s only ever makes anomalies subtler. (At K = 4096, f = 0.05 this affects images with
    s < 0.05; at K = 32 it affects s < 1/32 since floor(0.05*32) = 1.)
    """

    def strengths(self, num_images: int, generator: torch.Generator, device: torch.device | str = "cpu") -> Tensor:
        """(num_images,) float64 strengths s ~ U[lambda_s, 1): the only random draw of `rank_windows`."""
        return self.similarity_bound + (1.0 - self.similarity_bound) * _random.uniform(
            (num_images,), generator, device, torch.float64)

    def windows_for(self, s: Tensor, codebook_size: int) -> tuple[Tensor, Tensor]:
        """The rank windows (low, high) long of strengths s (num_images,), see the class docstring."""
        low = torch.full(s.shape, self.excluded_ranks(codebook_size), dtype=torch.long, device=s.device)
        high = ((s * codebook_size).floor().long() + 1).clamp_max(codebook_size - 1)
        return low, torch.maximum(high, low + 1).clamp_max(codebook_size)

    def rank_windows(self, codebook_size: int, num_images: int, generator: torch.Generator,
                     device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        return self.windows_for(self.strengths(num_images, generator, device), codebook_size)
