"""An adaptive strategy: a curriculum over training, replacements drawn far from the original code early in stage 2
(easy, obvious anomalies) and nearer as training goes on (subtle ones)."""

from __future__ import annotations

import torch
from torch import Tensor

from dsr.anomalies.strategies.base import SamplingStrategy, register


@register("curriculum")
class Curriculum(SamplingStrategy):
    """A band of distance ranks that moves with training progress p (`self.progress`, set by the training loop
    before every stage-2 step: iterations done / total): the band is [floor(low(p)*K), floor(high(p)*K)) with
    low(p) = (1 - p) * start_low + p * end_low, the same for high; the same band for every image of a step.

    sampling_params: start_low (0.5), start_high (1.0): the band at the start (far codes); end_low (default:
    config.excluded_nearest_fraction), end_high (0.3): the band at the end (near codes). Each band needs
    0 <= low < high <= 1. Where a band holds no rank at a small K it is the single rank floor(low*K), as in
    distance_band. Outside training (progress never set) the start band is used.
    """

    param_defaults = {"start_low": 0.5, "start_high": 1.0, "end_low": None, "end_high": 0.3}

    def validate_params(self) -> None:
        if self.params["end_low"] is None:
            self.params["end_low"] = self.excluded_nearest_fraction
        for end in ("start", "end"):
            low, high = self._param_float(f"{end}_low"), self._param_float(f"{end}_high")
            if not 0.0 <= low < 1.0:
                raise ValueError(f"sampling_params.{end}_low of strategy {self.name!r} must lie in [0, 1), "
                                 f"got {low!r}")
            if not low < high <= 1.0:
                raise ValueError(f"sampling_params.{end}_high of strategy {self.name!r} must lie in "
                                 f"({end}_low={low!r}, 1], got {high!r}")

    def band(self) -> tuple[float, float]:
        """(low, high) fractions of K at the current progress."""
        p = self.progress  # (1 - p) * start + p * end: exactly the given bands at p = 0 and p = 1
        low = (1.0 - p) * self.params["start_low"] + p * self.params["end_low"]
        high = (1.0 - p) * self.params["start_high"] + p * self.params["end_high"]
        return float(low), float(high)

    def rank_windows(self, codebook_size: int, num_images: int, generator: torch.Generator,
                     device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        low_fraction, high_fraction = self.band()
        low = min(int(low_fraction * codebook_size), codebook_size - 1)
        high = min(max(int(high_fraction * codebook_size), low + 1), codebook_size)
        return (torch.full((num_images,), low, dtype=torch.long, device=device),
                torch.full((num_images,), high, dtype=torch.long, device=device))
