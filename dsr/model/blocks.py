"""Small building blocks shared by DSR's networks: conv-InstanceNorm-ReLU pairs and the VQ-VAE residual stack."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def conv_norm_relu_pair(in_channels: int, mid_channels: int, out_channels: int) -> nn.Sequential:
    """[conv3x3, InstanceNorm (no affine), ReLU] x 2; indices 0 and 3 are the convs (reference key layout)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, mid_channels, 3, padding=1),
        nn.InstanceNorm2d(mid_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(mid_channels, out_channels, 3, padding=1),
        nn.InstanceNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def upsample_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """Bilinear x2 (align_corners=True), conv3x3, InstanceNorm, ReLU; index 1 is the conv."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.InstanceNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def deconv(in_channels: int, out_channels: int) -> nn.ConvTranspose2d:
    """The x2 transposed convolution used everywhere in DSR: kernel 4, stride 2, padding 1."""
    return nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1)


class ResidualBlock(nn.Module):
    """ReLU(x) + conv1x1(ReLU(conv3x3(ReLU(x)))), both convs without bias.

    The reference's block starts with an in-place ReLU that overwrites x before the skip sum, so it computes
    ReLU(x) + block(x), not x + block(x); its published weights were trained that way, so we compute the same.
    """

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, hidden, 3, padding=1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        return x + self.block(x)  # the block's own leading ReLU is then a no-op, kept for the key layout


class ResidualStack(nn.Module):
    """`num_layers` residual blocks followed by a ReLU."""

    def __init__(self, channels: int, hidden: int, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(ResidualBlock(channels, hidden) for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return F.relu(x)


class AppearanceDecoder(nn.Module):
    """cat(up(Q_lo), Q_hi) (B,2D,H/4,W/4) -> image (B,3,H,W), linear output.

    The general appearance decoder of the latent model; the object-specific decoder reuses it as its tail.
    """

    def __init__(self, in_channels: int, hidden: int, residual_hidden: int, residual_layers: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, hidden, 3, padding=1)
        self.residual_stack = ResidualStack(hidden, residual_hidden, residual_layers)
        self.deconv1 = deconv(hidden, hidden // 2)
        self.deconv2 = deconv(hidden // 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.residual_stack(self.conv1(x))
        x = F.relu(self.deconv1(x))  # (B, C/2, H/2, W/2)
        return self.deconv2(x)  # (B, 3, H, W)


def init_normal_conv_weights(module: nn.Module, std: float = 0.02) -> None:
    """The reference's init for the object decoder and detection module: conv weights ~ N(0, std)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, std)
