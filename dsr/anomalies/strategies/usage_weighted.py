"""A distance band weighted by code usage: replacements favour codes that normal features of the batch use."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dsr.anomalies import _random
from dsr.anomalies.strategies.base import rank_of, register
from dsr.anomalies.strategies.distance_band import DistanceBand


@register("usage_weighted")
class UsageWeighted(DistanceBand):
    """Replacement drawn from the band of distance ranks [floor(low*K), floor(high*K)) (the same band and rules
    as distance_band), each in-band code with probability proportional to (usage count + smoothing).

    What it assumes about anomalies: a realistic anomaly looks like other normal material displaced (a code that
    is common elsewhere in normal images), not like a code that normal data never produces.

    Where the usage counts come from: `feature_anomalies` calls `sample` once per level with only the
    pre-quantisation features z of the masked positions (all images of the batch that are perturbed at that
    level), not the quantised indices of the whole batch. So the usage of code c is the number of those rows
    whose nearest code (the quantiser's choice, argmin of the distance) is c: how often normal features of the
    current batch at this level, at the positions about to be replaced, were quantised to c. It is counted over
    all rows of the call (every image, every chunk), before any replacement. Caveat: for "both"-level images the
    hi features were recomputed from the already perturbed lo level, so their nearest codes are not purely
    normal; they are a minority of the rows.

    sampling_params: low (default: config.excluded_nearest_fraction), high (default 0.6), 0 <= low < high <= 1,
    as in distance_band; smoothing (default 1.0, finite and > 0), added to every count, so codes that no row
    uses keep a small chance and a large smoothing approaches distance_band (uniform in the band).

    Sampling is exact: a code is drawn from the usage distribution over all K codes and accepted if its rank
    lies in the row's band (this is the usage distribution restricted to the band); rows still rejected after
    `rounds` rounds are resolved by a partial sort of their distances.
    """

    param_defaults = {"low": None, "high": 0.6, "smoothing": 1.0}
    rounds = 8  # rejection rounds before the exact (topk) path

    def validate_params(self) -> None:
        super().validate_params()  # the band: low and high, as distance_band
        smoothing = self._param_float("smoothing")
        if not (smoothing > 0.0 and math.isfinite(smoothing)):
            raise ValueError(f"sampling_params.smoothing of strategy {self.name!r} must be a finite number > 0, "
                             f"got {smoothing!r}")
        self.smoothing = smoothing

    def usage_counts(self, z: Tensor, codebook: Tensor) -> Tensor:
        """(K,) float64: how many rows of z (N, D) have each code as their nearest (their quantised index)."""
        counts = torch.zeros(codebook.shape[0], dtype=torch.float64, device=z.device)
        for _, d in self.distance_chunks(z, codebook):
            counts += torch.bincount(d.argmin(1), minlength=codebook.shape[0]).to(torch.float64)
        return counts

    def draw(self, z: Tensor, codebook: Tensor, low: Tensor, high: Tensor, generator: torch.Generator) -> Tensor:
        weights = self.usage_counts(z, codebook) + self.smoothing  # (K,), every entry > 0
        cdf = weights.cumsum(0)
        out = torch.empty(z.shape[0], dtype=torch.long, device=z.device)
        for rows, d in self.distance_chunks(z, codebook):
            out[rows] = self._draw_chunk(d, low[rows], high[rows], weights, cdf, generator)
        return out

    def _draw_chunk(self, d: Tensor, low: Tensor, high: Tensor, weights: Tensor, cdf: Tensor,
                    generator: torch.Generator) -> Tensor:
        out = torch.empty(d.shape[0], dtype=torch.long, device=d.device)
        pending = torch.arange(d.shape[0], device=d.device)
        for _ in range(self.rounds):
            if pending.numel() == 0:
                break
            candidate = _sample_shared_cdf(cdf, pending.numel(), generator)
            rank = rank_of(d[pending], candidate)
            accepted = (rank >= low[pending]) & (rank < high[pending])
            out[pending[accepted]] = candidate[accepted]
            pending = pending[~accepted]
        if pending.numel():
            out[pending] = _exact_weighted_draw(d[pending], low[pending], high[pending], weights, generator)
        return out


def _exact_weighted_draw(d: Tensor, low: Tensor, high: Tensor, weights: Tensor, generator: torch.Generator) -> Tensor:
    """Per row of d (n, K), a code among the ranks [low, high) drawn with probability proportional to weights."""
    k = d.shape[1]
    nearest_needed, farthest_needed = int(high.max()), k - int(low.min())
    if nearest_needed <= farthest_needed:
        order = torch.topk(d, nearest_needed, dim=1, largest=False, sorted=True).indices  # column j = rank j
        rank = torch.arange(nearest_needed, device=d.device)
    else:
        order = torch.topk(d, farthest_needed, dim=1, largest=True, sorted=True).indices  # column j = rank k-1-j
        rank = k - 1 - torch.arange(farthest_needed, device=d.device)
    in_band = (rank[None, :] >= low[:, None]) & (rank[None, :] < high[:, None])
    w = torch.where(in_band, weights[order], torch.zeros((), dtype=weights.dtype, device=d.device))
    column = _sample_cdf(w.cumsum(1), generator)
    return order.gather(1, column[:, None]).squeeze(1)


def _sample_shared_cdf(cdf: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """n codes drawn from one unnormalised cdf (K,) of positive weights."""
    total = cdf[-1:]
    u = _random.uniform((n,), generator, cdf.device, cdf.dtype) * total
    u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))  # keep u < total after rounding
    return torch.searchsorted(cdf, u, right=True).clamp_max(cdf.shape[0] - 1)


def _sample_cdf(cdf: Tensor, generator: torch.Generator) -> Tensor:
    """One column per row of an unnormalised cdf (n, K); columns of zero probability are never returned."""
    total = cdf[:, -1:]
    u = _random.uniform((cdf.shape[0], 1), generator, cdf.device, cdf.dtype) * total
    u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))  # keep u < total after rounding
    return torch.searchsorted(cdf.contiguous(), u, right=True).squeeze(1).clamp_max(cdf.shape[1] - 1)
