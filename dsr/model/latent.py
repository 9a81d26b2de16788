"""The discrete latent model (stage 1): a two-level VQ-VAE with a general appearance decoder.

"hi" is the high-resolution level (H/4, the reference's "bot"), "lo" the low-resolution level (H/8, "top").
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from dsr.config import DSRConfig
from dsr.model.blocks import AppearanceDecoder, ResidualStack, deconv
from dsr.model.quantizer import VectorQuantizer


class EncoderHi(nn.Module):
    """Image (B,3,H,W) -> features (B,C,H/4,W/4)."""

    def __init__(self, hidden: int, residual_hidden: int, residual_layers: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, hidden // 2, 4, stride=2, padding=1)
        self.conv2 = nn.Conv2d(hidden // 2, hidden, 4, stride=2, padding=1)
        self.conv3 = nn.Conv2d(hidden, hidden, 3, padding=1)
        self.residual_stack = ResidualStack(hidden, residual_hidden, residual_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))  # (B, C/2, H/2, W/2)
        x = F.relu(self.conv2(x))  # (B, C, H/4, W/4)
        return self.residual_stack(self.conv3(x))


class EncoderLo(nn.Module):
    """Hi features (B,C,H/4,W/4) -> lo features (B,C,H/8,W/8)."""

    def __init__(self, hidden: int, residual_hidden: int, residual_layers: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(hidden, hidden, 4, stride=2, padding=1)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, padding=1)
        self.residual_stack = ResidualStack(hidden, residual_hidden, residual_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))  # (B, C, H/8, W/8)
        x = F.relu(self.conv2(x))
        return self.residual_stack(x)


class LatentEncoding(NamedTuple):
    features_hi: torch.Tensor  # (B, C, H/4, W/4) encoder-hi output, to recompute z_hi after perturbing lo
    z_lo: torch.Tensor  # (B, D, H/8, W/8) pre-quantisation
    q_lo: torch.Tensor  # (B, D, H/8, W/8)
    z_hi: torch.Tensor  # (B, D, H/4, W/4) pre-quantisation
    q_hi: torch.Tensor  # (B, D, H/4, W/4)
    loss: torch.Tensor  # commitment loss of both levels


class DiscreteLatentModel(nn.Module):
    """Two-level VQ-VAE: encoders, 1x1 pre-quantisation convs, EMA codebooks, lo->hi upsampling, general decoder."""

    def __init__(self, config: DSRConfig) -> None:
        super().__init__()
        c = config
        self.encoder_hi = EncoderHi(c.vq_hidden, c.vq_residual_hidden, c.vq_residual_layers)
        self.encoder_lo = EncoderLo(c.vq_hidden, c.vq_residual_hidden, c.vq_residual_layers)
        self.pre_quant_lo = nn.Conv2d(c.vq_hidden, c.embedding_dim, 1)
        self.pre_quant_hi = nn.Conv2d(c.vq_hidden + c.embedding_dim, c.embedding_dim, 1)
        quantizer_args = (c.codebook_size, c.embedding_dim, c.commitment_cost, c.ema_decay, c.ema_epsilon,
                          c.codebook_restart_threshold)
        self.quantizer_lo = VectorQuantizer(*quantizer_args)
        self.quantizer_hi = VectorQuantizer(*quantizer_args)
        self.upsample_lo = deconv(c.embedding_dim, c.embedding_dim)
        self.general_decoder = AppearanceDecoder(2 * c.embedding_dim, c.vq_hidden, c.vq_residual_hidden,
                                                 c.vq_residual_layers)

    def encode(self, images: torch.Tensor) -> LatentEncoding:
        """Images (B,3,H,W) -> both levels' pre-quantisation and quantised features."""
        features_hi = self.encoder_hi(images)  # (B, C, H/4, W/4)
        z_lo = self.pre_quant_lo(self.encoder_lo(features_hi))  # (B, D, H/8, W/8)
        q_lo = self.quantizer_lo(z_lo)
        z_hi = self.z_hi_from(features_hi, q_lo.quantized)  # (B, D, H/4, W/4)
        q_hi = self.quantizer_hi(z_hi)
        return LatentEncoding(features_hi, z_lo, q_lo.quantized, z_hi, q_hi.quantized, q_lo.loss + q_hi.loss)

    def z_hi_from(self, features_hi: torch.Tensor, q_lo: torch.Tensor) -> torch.Tensor:
        """Pre-quantisation hi feature, conditioned on a (possibly perturbed) Q_lo."""
        return self.pre_quant_hi(torch.cat((features_hi, self.upsample_lo(q_lo)), dim=1))

    def join(self, q_hi: torch.Tensor, q_lo: torch.Tensor) -> torch.Tensor:
        """cat(up(Q_lo), Q_hi): the (B, 2D, H/4, W/4) input of both appearance decoders."""
        return torch.cat((self.upsample_lo(q_lo), q_hi), dim=1)

    def decode(self, q_hi: torch.Tensor, q_lo: torch.Tensor) -> torch.Tensor:
        """General appearance decoder: quantised features -> image (B,3,H,W)."""
        return self.general_decoder(self.join(q_hi, q_lo))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, LatentEncoding]:
        """Stage-1 pass: reconstruction and the encoding (whose `loss` is the commitment loss)."""
        encoding = self.encode(images)
        return self.decode(encoding.q_hi, encoding.q_lo), encoding
