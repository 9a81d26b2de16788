"""The UNet of the anomaly detection and upsampling modules (3 max-pools, skip connections)."""

from __future__ import annotations

import torch
from torch import nn

from dsr.model.blocks import conv_norm_relu_pair, init_normal_conv_weights, upsample_conv


class UNetEncoder(nn.Module):
    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        self.block1 = conv_norm_relu_pair(in_channels, width, width)
        self.block2 = conv_norm_relu_pair(width, 2 * width, 2 * width)
        self.block3 = conv_norm_relu_pair(2 * width, 4 * width, 4 * width)
        self.block4 = conv_norm_relu_pair(4 * width, 4 * width, 4 * width)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b1 = self.block1(x)  # (B, w, H, W)
        b2 = self.block2(self.pool(b1))  # (B, 2w, H/2, W/2)
        b3 = self.block3(self.pool(b2))  # (B, 4w, H/4, W/4)
        b4 = self.block4(self.pool(b3))  # (B, 4w, H/8, W/8)
        return b1, b2, b3, b4


class UNetDecoder(nn.Module):
    def __init__(self, width: int, out_channels: int) -> None:
        super().__init__()
        self.up1 = upsample_conv(4 * width, 4 * width)
        self.db1 = conv_norm_relu_pair(8 * width, 4 * width, 4 * width)
        self.up2 = upsample_conv(4 * width, 2 * width)
        self.db2 = conv_norm_relu_pair(4 * width, 2 * width, 2 * width)
        self.up3 = upsample_conv(2 * width, width)
        self.db3 = conv_norm_relu_pair(2 * width, width, width)
        self.fin_out = nn.Sequential(nn.Conv2d(width, out_channels, 3, padding=1))

    def forward(self, b1: torch.Tensor, b2: torch.Tensor, b3: torch.Tensor, b4: torch.Tensor) -> torch.Tensor:
        x = self.db1(torch.cat((self.up1(b4), b3), dim=1))  # (B, 4w, H/4, W/4)
        x = self.db2(torch.cat((self.up2(x), b2), dim=1))  # (B, 2w, H/2, W/2)
        x = self.db3(torch.cat((self.up3(x), b1), dim=1))  # (B, w, H, W)
        return self.fin_out(x)


class UNet(nn.Module):
    """Images stacked on channels (B,in,H,W) -> 2-class logits (B,2,H,W)."""

    def __init__(self, in_channels: int, width: int, out_channels: int = 2) -> None:
        super().__init__()
        self.encoder = UNetEncoder(in_channels, width)
        self.decoder = UNetDecoder(width, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(*self.encoder(x))


class AnomalyDetectionModule(UNet):
    """cat(object-specific image, general image) -> anomaly logits at full resolution."""

    def __init__(self, width: int) -> None:
        super().__init__(6, width)
        init_normal_conv_weights(self)


class UpsamplingModule(UNet):
    """cat(object-specific image, general image, detection softmax) -> refined anomaly logits."""

    def __init__(self, width: int) -> None:
        super().__init__(8, width)
