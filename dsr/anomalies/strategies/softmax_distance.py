"""A soft similarity bound: nearer codes are likelier, with a temperature instead of a hard rank cut-off."""

from __future__ import annotations

import torch
from torch import Tensor

from dsr.anomalies import _random
from dsr.anomalies.strategies.base import SamplingStrategy, rank_of, register


@register("softmax_distance")
class SoftmaxDistance(SamplingStrategy):
    """Replacement drawn with probability proportional to exp(-d / (temperature * mean_d)) over the codes of
    rank >= floor(f*K) (f = config.excluded_nearest_fraction; the nearest codes stay excluded).

    d is the squared L2 distance to the pre-quantisation feature, mean_d its mean over all K codes of that row,
    so the temperature is scale-free: temperature -> 0 picks the nearest allowed code, a large temperature
    approaches uniform over the allowed codes. sampling_params: temperature (default 0.25, > 0).
    """

    param_defaults = {"temperature": 0.25}
    rounds = 4  # rejection rounds before the exact (topk) exclusion

    def validate_params(self) -> None:
        temperature = self._param_float("temperature")
        if not temperature > 0.0:
            raise ValueError(f"sampling_params.temperature of strategy 'softmax_distance' must be > 0, "
                             f"got {temperature!r}")
        self.temperature = temperature

    def rank_windows(self, codebook_size: int, num_images: int, generator: torch.Generator,
                     device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        low = torch.full((num_images,), self.excluded_ranks(codebook_size), dtype=torch.long, device=device)
        return low, torch.full_like(low, codebook_size)

    def draw(self, z: Tensor, codebook: Tensor, low: Tensor, high: Tensor, generator: torch.Generator) -> Tensor:
        excluded = self.excluded_ranks(codebook.shape[0])  # the same for every row
        out = torch.empty(z.shape[0], dtype=torch.long, device=z.device)
        for rows, d in self.distance_chunks(z, codebook, squared=True):
            logits = d / (-self.temperature * d.mean(1, keepdim=True).clamp_min(1e-12))
            out[rows] = self._draw_chunk(d, logits, excluded, generator)
        return out

    def _draw_chunk(self, d: Tensor, logits: Tensor, excluded: int, generator: torch.Generator) -> Tensor:
        """Rejection: sample the softmax over all codes, keep draws of rank >= excluded (exactly the softmax
        restricted to those codes); rows still rejected after `rounds` get the nearest codes masked out."""
        cdf = torch.softmax(logits, dim=1).cumsum(1)
        out = torch.empty(d.shape[0], dtype=torch.long, device=d.device)
        pending = torch.arange(d.shape[0], device=d.device)
        for _ in range(self.rounds if excluded else 1):
            if pending.numel() == 0:
                break
            candidate = _sample_cdf(cdf[pending], generator)
            accepted = rank_of(d[pending], candidate) >= excluded if excluded else torch.ones_like(candidate, dtype=torch.bool)
            out[pending[accepted]] = candidate[accepted]
            pending = pending[~accepted]
        if pending.numel():
            rest = logits[pending]
            rest.scatter_(1, torch.topk(d[pending], excluded, dim=1, largest=False).indices, float("-inf"))
            out[pending] = _sample_cdf(torch.softmax(rest, dim=1).cumsum(1), generator)
        return out


def _sample_cdf(cdf: Tensor, generator: torch.Generator) -> Tensor:
    """One column per row of an unnormalised cdf (n, K); columns of zero probability are never returned."""
    total = cdf[:, -1:]
    u = _random.uniform((cdf.shape[0], 1), generator, cdf.device) * total
    u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))  # keep u < total after rounding
    # right=True: the first column whose cdf exceeds u, so a flat (zero-probability) step is never chosen
    return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_max(cdf.shape[1] - 1)
