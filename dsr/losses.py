"""DSR's training losses (paper Eq. 3): focal loss on the anomaly map, feature MSE, image MSE."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.nn import functional as F

from dsr.config import DSRConfig


def focal_loss(probs: torch.Tensor, mask: torch.Tensor, gamma: float = 2.0, smooth: float = 1e-5) -> torch.Tensor:
    """Focal loss on 2-class probabilities (B,2,H,W) against a {0,1} mask (B,1,H,W), mean over pixels.

    As in the reference: the one-hot target is smoothed to [smooth, 1 - smooth] and `smooth` is added to p_t.
    """
    target = mask.round().long().clamp(0, 1)  # (B, 1, H, W)
    one_hot = torch.cat((1 - target, target), dim=1).to(probs.dtype).clamp(smooth, 1.0 - smooth)
    p_t = (one_hot * probs).sum(dim=1) + smooth  # (B, H, W)
    return (-((1 - p_t) ** gamma) * p_t.log()).mean()


class LossTerms(NamedTuple):
    total: torch.Tensor
    focal: torch.Tensor
    feature: torch.Tensor
    image: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        return {f"loss_{name}": value.item() for name, value in self._asdict().items()}


def stage2_loss(config: DSRConfig, detection_logits: torch.Tensor, mask: torch.Tensor,
                restored_z_hi: torch.Tensor, restored_z_lo: torch.Tensor, target_q_hi: torch.Tensor,
                target_q_lo: torch.Tensor, object_image: torch.Tensor, clean_images: torch.Tensor,
                reconstruction_weight: torch.Tensor | None = None) -> LossTerms:
    """focal + loss_feat_weight * (MSE_hi + MSE_lo) + loss_img_weight * MSE_img; a weight of 0 drops its term.

    reconstruction_weight (B,) excludes samples from the feature and image terms (real anomalies in the KSDD2
    supervised mode have no anomaly-free target).
    """
    zero = detection_logits.new_zeros(())
    focal = focal_loss(torch.softmax(detection_logits, dim=1), mask, config.focal_gamma)
    feature = image = zero
    if config.loss_feat_weight > 0:
        feature = (_weighted_mse(restored_z_hi, target_q_hi, reconstruction_weight)
                   + _weighted_mse(restored_z_lo, target_q_lo, reconstruction_weight))
    if config.loss_img_weight > 0:
        image = _weighted_mse(object_image, clean_images, reconstruction_weight)
    total = (config.loss_focal_weight * focal + config.loss_feat_weight * feature
             + config.loss_img_weight * image)
    return LossTerms(total, focal, feature, image)


def _weighted_mse(prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        return F.mse_loss(prediction, target)
    per_sample = (prediction - target).square().flatten(1).mean(1)
    return (per_sample * weight).sum() / weight.sum().clamp_min(1.0)
