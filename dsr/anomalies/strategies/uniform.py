"""Table 6's DSR_random ablation: the replacement is any code, uniformly, no ranking."""

from __future__ import annotations

import torch
from torch import Tensor

from dsr.anomalies import _random
from dsr.anomalies.strategies.base import SamplingStrategy, register


@register("uniform")
class Uniform(SamplingStrategy):
    """Replacement drawn uniformly from all K codes (it may even be the nearest one); distances are not computed."""

    def rank_windows(self, codebook_size: int, num_images: int, generator: torch.Generator,
                     device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        low = torch.zeros(num_images, dtype=torch.long, device=device)
        return low, torch.full_like(low, codebook_size)

    def draw(self, z: Tensor, codebook: Tensor, low: Tensor, high: Tensor, generator: torch.Generator) -> Tensor:
        return _random.randint(codebook.shape[0], (z.shape[0],), generator, z.device)
