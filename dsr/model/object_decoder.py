"""Object-specific appearance decoder: restored quantised features -> an anomaly-free image of the object."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from dsr.model.blocks import AppearanceDecoder, conv_norm_relu_pair, deconv, init_normal_conv_weights


class ObjectDecoder(nn.Module):
    """cat(up(restored Q_lo), restored Q_hi) (B,2D,h,w) -> image (B,3,4h,4w), linear output."""

    def __init__(self, in_channels: int, width: int, bottleneck: int, hidden: int, residual_hidden: int,
                 residual_layers: int) -> None:
        super().__init__()
        self.block1 = conv_norm_relu_pair(in_channels, width, 2 * width)
        self.block2 = conv_norm_relu_pair(2 * width, 2 * width, 4 * width)
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = nn.Conv2d(4 * width, bottleneck, 1)
        self.up1 = deconv(bottleneck, bottleneck)
        self.up2 = deconv(bottleneck, bottleneck)
        self.tail = AppearanceDecoder(bottleneck, hidden, residual_hidden, residual_layers)
        init_normal_conv_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.block1(x))  # (B, 2w, h/2, w/2)
        x = self.pool(self.block2(x))  # (B, 4w, h/4, w/4)
        x = self.bottleneck(x)
        x = F.relu(self.up1(x))  # (B, b, h/2, w/2)
        x = F.relu(self.up2(x))  # (B, b, h, w)
        return self.tail(x)  # (B, 3, 4h, 4w)
