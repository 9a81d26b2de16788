"""A per-image mixture of rank-window strategies: each image's anomaly follows one strategy, drawn by weight.

What it assumes about anomalies: real defects are not all of one kind; some are near-in-distribution (a subtle
texture change: similarity_bound with a small lambda_s, distance_band near), some far (a foreign object: uniform,
distance_band far). Training on a mixture covers both, instead of betting on one distance regime.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from dsr.anomalies.strategies.base import STRATEGIES, SamplingStrategy, register
from dsr.config import DSRConfig

WINDOW_STRATEGIES = ("similarity_bound", "uniform", "distance_band")  # pure rank-window strategies


@register("mixture")
class Mixture(SamplingStrategy):
    """sampling_params: strategies (names of rank-window strategies, each with its default parameters and the
    config's lambda_s) and weights (non-negative, not all 0; default equal). Per image one strategy is drawn; its
    rank window is that image's window, and the code is drawn uniformly in it (what each of them does alone)."""

    param_defaults: dict[str, Any] = {"strategies": ["similarity_bound", "uniform"], "weights": None}

    def __init__(self, config: DSRConfig) -> None:
        super().__init__(config)
        self.components = [STRATEGIES[name](config.replace(sampling_strategy=name, sampling_params={}))
                           for name in self.params["strategies"]]

    def validate_params(self) -> None:
        names = self.params["strategies"]
        if not isinstance(names, (list, tuple)) or not names:
            raise ValueError(f"sampling_params.strategies of strategy 'mixture' must be a non-empty list, got "
                             f"{names!r}")
        for name in names:
            if name not in WINDOW_STRATEGIES:
                raise ValueError(f"sampling_params.strategies: {name!r} cannot be mixed (mixable rank-window "
                                 f"strategies: {', '.join(WINDOW_STRATEGIES)})")
        weights = self.params["weights"]
        if weights is None:
            weights = [1.0] * len(names)
        if (not isinstance(weights, (list, tuple)) or len(weights) != len(names)
                or any(isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0 for w in weights)
                or sum(weights) <= 0):
            raise ValueError(f"sampling_params.weights of strategy 'mixture' must be {len(names)} non-negative "
                             f"numbers, not all 0, got {weights!r}")
        self.weights = torch.tensor([float(w) for w in weights], dtype=torch.float64)

    def rank_windows(self, codebook_size: int, num_images: int, generator: torch.Generator,
                     device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        """Each image's component (drawn by weight), then that component's window for it."""
        choice = torch.multinomial(self.weights, num_images, replacement=True, generator=generator)  # (n,)
        choice = choice.to(device)
        low = torch.empty(num_images, dtype=torch.long, device=device)
        high = torch.empty_like(low)
        for index, component in enumerate(self.components):
            c_low, c_high = component.rank_windows(codebook_size, num_images, generator, device)
            chosen = choice == index
            low[chosen], high[chosen] = c_low[chosen], c_high[chosen]
        return low, high
