"""Subspace restriction module: a skip-free UNet on quantised features, re-quantised by the frozen codebook."""

from __future__ import annotations

import torch
from torch import nn

from dsr.model.blocks import conv_norm_relu_pair, upsample_conv


class RestrictionEncoder(nn.Module):
    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        self.block1 = conv_norm_relu_pair(in_channels, width, width)
        self.block2 = conv_norm_relu_pair(width, 2 * width, 2 * width)
        self.block3 = conv_norm_relu_pair(2 * width, 4 * width, 4 * width)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block1(x)  # (B, w, h, w)
        x = self.block2(self.pool(x))  # (B, 2w, h/2, w/2)
        return self.block3(self.pool(x))  # (B, 4w, h/4, w/4)


class RestrictionDecoder(nn.Module):
    def __init__(self, width: int, out_channels: int) -> None:
        super().__init__()
        self.up2 = upsample_conv(4 * width, 2 * width)
        self.db2 = conv_norm_relu_pair(2 * width, 2 * width, 2 * width)
        self.up3 = upsample_conv(2 * width, width)
        self.db3 = conv_norm_relu_pair(width, width, width)
        self.fin_out = nn.Sequential(nn.Conv2d(width, out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.db2(self.up2(x))  # (B, 2w, h/2, w/2)
        x = self.db3(self.up3(x))  # (B, w, h, w)
        return self.fin_out(x)


class SubspaceRestriction(nn.Module):
    """(B,D,h,w) possibly anomalous quantised features -> restored pre-quantisation features (B,D,h,w).

    Re-quantisation with the level's codebook is done by the caller (`DSR.restore`), which owns the quantiser.
    """

    def __init__(self, embedding_dim: int, width: int) -> None:
        super().__init__()
        self.encoder = RestrictionEncoder(embedding_dim, width)
        self.decoder = RestrictionDecoder(width, embedding_dim)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(q))
