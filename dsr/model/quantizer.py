"""Vector quantiser with an EMA codebook (VQ-VAE-2), one per latent level."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

# Rows of flattened features per distance block: bounds the (rows, K) distance matrix to ~16 MB at K=4096.
_DISTANCE_CHUNK_ROWS = 1024


class Quantized(NamedTuple):
    quantized: torch.Tensor  # (B, D, h, w), straight-through: forward value = code, gradient = identity
    loss: torch.Tensor  # commitment loss, scalar
    indices: torch.Tensor  # (B, h, w) long
    perplexity: torch.Tensor  # scalar, codebook usage


class VectorQuantizer(nn.Module):
    """Nearest-code (squared L2) quantisation; the codebook is learned by EMA updates in training mode only.

    The codebook and the EMA weight copy are parameters that take no gradient (`requires_grad=False`); they are
    counted in the parameter totals, as the reference does.
    """

    def __init__(self, num_codes: int, code_dim: int, commitment_cost: float, decay: float, epsilon: float,
                 restart_threshold: float = 0.0) -> None:
        super().__init__()
        self.restart_threshold = restart_threshold
        self.num_codes = num_codes
        self.code_dim = code_dim
        self.commitment_cost = commitment_cost
        self.decay = decay
        self.epsilon = epsilon
        self.embedding = nn.Embedding(num_codes, code_dim)
        self.embedding.weight.data.normal_()
        self.embedding.weight.requires_grad_(False)
        self.ema_weight = nn.Parameter(torch.randn(num_codes, code_dim), requires_grad=False)
        self.register_buffer("ema_cluster_size", torch.zeros(num_codes))

    @property
    def codebook(self) -> torch.Tensor:
        """(K, D) code vectors."""
        return self.embedding.weight

    def quantize_indices(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) -> (B, h, w) index of the nearest code, computed in row blocks to bound memory.

        Always at least fp32 with autocast off, so a bf16 autocast around it never changes which code wins.
        """
        with torch.autocast(device_type=z.device.type, enabled=False):
            return self._nearest(z.to(torch.promote_types(z.dtype, torch.float32)))

    def _nearest(self, z: torch.Tensor) -> torch.Tensor:
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        codebook = self.codebook.to(flat.dtype)
        code_norms = (codebook**2).sum(1)
        indices = [
            # the reference's expansion |z|^2 + |e|^2 - 2 z.e, so near-ties resolve the same way
            ((rows**2).sum(1, keepdim=True) + code_norms - 2 * rows @ codebook.t()).argmin(1)
            for rows in flat.split(_DISTANCE_CHUNK_ROWS)
        ]
        return torch.cat(indices).view(b, h, w)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, h, w) code indices -> (B, D, h, w) code vectors."""
        return F.embedding(indices, self.codebook).permute(0, 3, 1, 2).contiguous()

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Straight-through quantisation with the codebook frozen (never an EMA update), (B,D,h,w) -> same."""
        codes = self.lookup(self.quantize_indices(z))
        return z + (codes - z).detach()

    def forward(self, z: torch.Tensor) -> Quantized:
        """Nearest codes, EMA update in training mode, commitment loss; fp32, autocast off (see quantize_indices)."""
        with torch.autocast(device_type=z.device.type, enabled=False):
            return self._forward(z.to(torch.promote_types(z.dtype, torch.float32)))  # float64 stays float64

    def _forward(self, z: torch.Tensor) -> Quantized:
        indices = self.quantize_indices(z)
        codes = self.lookup(indices)
        if self.training and torch.is_grad_enabled():  # never under no_grad/inference_mode (e.g. predict)
            self._ema_update(z, indices)  # after the lookup: this batch uses the codebook it was matched to
        loss = self.commitment_cost * F.mse_loss(codes.detach(), z)
        quantized = z + (codes - z).detach()
        counts = torch.bincount(indices.flatten(), minlength=self.num_codes).float()
        probs = counts / counts.sum()
        perplexity = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())
        return Quantized(quantized, loss, indices, perplexity)

    @torch.no_grad()
    def _ema_update(self, z: torch.Tensor, indices: torch.Tensor) -> None:
        flat = z.permute(0, 2, 3, 1).reshape(-1, self.code_dim)
        idx = indices.flatten()
        counts = torch.bincount(idx, minlength=self.num_codes).to(flat.dtype)
        self.ema_cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        n = self.ema_cluster_size.sum()
        # Laplace smoothing keeps unused codes from dividing by zero
        smoothed = (self.ema_cluster_size + self.epsilon) / (n + self.num_codes * self.epsilon) * n
        self.ema_cluster_size.copy_(smoothed)
        summed = torch.zeros_like(self.ema_weight).index_add_(0, idx, flat)
        self.ema_weight.mul_(self.decay).add_(summed, alpha=1 - self.decay)
        self.embedding.weight.copy_(self.ema_weight / self.ema_cluster_size.unsqueeze(1))
        if self.restart_threshold > 0:
            self._restart_dead_codes(flat, idx)

    def _restart_dead_codes(self, flat: torch.Tensor, idx: torch.Tensor) -> None:
        """Move codes whose EMA usage fell below the threshold onto encoder outputs of this batch.

        Not in the reference code. Without it, the first EMA update from empty cluster sizes sends every code
        that batch did not use to ~1/epsilon scale, and training from scratch collapses to a handful of codes.
        The rows are picked deterministically from the batch, so a resumed run repeats them exactly.
        """
        dead = (self.ema_cluster_size < self.restart_threshold).nonzero().squeeze(1)
        if dead.numel() == 0:
            return
        offset = int(idx.sum().item())
        rows = (offset + torch.arange(dead.numel(), device=flat.device) * 7919) % flat.shape[0]
        size = self.restart_threshold
        self.embedding.weight[dead] = flat[rows]
        self.ema_weight[dead] = flat[rows] * size
        self.ema_cluster_size[dead] = size
