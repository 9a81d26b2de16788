"""A fixed band of distance ranks: isolates "how far" from the per-image randomness of similarity_bound."""

from __future__ import annotations

import torch
from torch import Tensor

from dsr.anomalies.strategies.base import SamplingStrategy, register


@register("distance_band")
class DistanceBand(SamplingStrategy):
    """Replacement drawn uniformly from the ranks [floor(low*K), floor(high*K)), the same band for every image.

    sampling_params: low (default: config.excluded_nearest_fraction), high (default 0.6, the mean upper end
    of similarity_bound at lambda_s = 0.2); 0 <= low < high <= 1. If the band holds no rank at a small K, it is
    widened to the single rank floor(low*K) (same rule as similarity_bound).
    """

    param_defaults = {"low": None, "high": 0.6}

    def validate_params(self) -> None:
        if self.params["low"] is None:
            self.params["low"] = self.excluded_nearest_fraction
        low, high = self._param_float("low"), self._param_float("high")
        if not 0.0 <= low < 1.0:
            raise ValueError(f"sampling_params.low of strategy {self.name!r} must lie in [0, 1), got {low!r}")
        if not low < high <= 1.0:
            raise ValueError(f"sampling_params.high of strategy {self.name!r} must lie in (low={low!r}, 1], "
                             f"got {high!r}")
        self.low, self.high = low, high

    def rank_windows(self, codebook_size: int, num_images: int, generator: torch.Generator,
                     device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        low = int(self.low * codebook_size)
        high = min(max(int(self.high * codebook_size), low + 1), codebook_size)
        return (torch.full((num_images,), low, dtype=torch.long, device=device),
                torch.full((num_images,), high, dtype=torch.long, device=device))
