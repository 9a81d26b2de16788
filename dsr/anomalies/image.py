"""Image-space anomalies: DRAEM-style texture paste (Table 6's DSR_img) and stage-3 colour blobs.

Both blend a source into the image inside a Perlin mask: out = (1 - m) * image + m * ((1 - beta) * source +
beta * image), with one beta per sample; samples whose mask is empty are returned unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dsr.anomalies import _random
from dsr.anomalies.perlin import perlin_masks
from dsr.anomalies.textures import TextureSource
from dsr.config import DSRConfig

TEXTURE_BLEND_MAX = 0.8  # DRAEM's beta ~ U[0, 0.8) for the texture paste (no config field for it yet)


def blend(images: Tensor, source: Tensor, masks: Tensor, beta: Tensor) -> Tensor:
    """(1 - m) * images + m * ((1 - beta) * source + beta * images); beta (B,), masks (B,1,H,W)."""
    beta = beta.to(images.dtype)[:, None, None, None]
    return images * (1.0 - masks) + masks * ((1.0 - beta) * source + beta * images)


def texture_anomalies(images: Tensor, textures: TextureSource, generator: torch.Generator, config: DSRConfig,
                      blend_max: float = TEXTURE_BLEND_MAX) -> tuple[Tensor, Tensor]:
    """Paste random textures into (B,3,H,W) images inside Perlin masks; returns (images, masks (B,1,H,W)).

    beta ~ U[0, blend_max) per sample; the masks follow config (anomaly_probability, Perlin scales, threshold).
    Textures are drawn only for samples that get an anomaly.
    """
    b, _, h, w = images.shape
    masks = perlin_masks(b, (h, w), generator, config, images.device).to(images.dtype)
    beta = _random.uniform((b,), generator, images.device) * blend_max
    anomalous = (masks.flatten(1).amax(1) > 0).nonzero().squeeze(1)
    source = images.clone()
    if anomalous.numel():
        pasted = textures.sample(anomalous.numel(), generator, images.device).to(images.dtype)
        if pasted.shape[-2:] != (h, w):
            pasted = F.interpolate(pasted, size=(h, w), mode="bilinear", align_corners=False)
        source[anomalous] = pasted
    return blend(images, source, masks, beta), masks


def colour_blob_anomalies(images: Tensor, generator: torch.Generator, config: DSRConfig) -> tuple[Tensor, Tensor]:
    """Stage-3 anomalies: inside a Perlin mask pixels become (1 - beta) * colour + beta * pixel, with one random
    RGB colour ~ U[0, 1)^3 and beta ~ U[0, config.stage3_blend_max) per sample. Returns (images, masks)."""
    b, _, h, w = images.shape
    masks = perlin_masks(b, (h, w), generator, config, images.device).to(images.dtype)
    colour = _random.uniform((b, images.shape[1], 1, 1), generator, images.device).to(images.dtype)
    beta = _random.uniform((b,), generator, images.device) * config.stage3_blend_max
    return blend(images, colour.expand_as(images), masks, beta), masks
