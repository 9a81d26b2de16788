"""One optimisation step of each training stage, and which parameters each stage trains.

Every random draw comes from the stage's `torch.Generator`, so a seeded run is reproducible and a resumed run
continues the same random sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from dsr.anomalies import (SamplingStrategy, TextureSource, colour_blob_anomalies, feature_anomalies, perlin_masks,
                           random_rotation, texture_anomalies)
from dsr.losses import focal_loss, stage2_loss
from dsr.model import DSR
from dsr.model.latent import LatentEncoding
from dsr.training.transfer import gather_to


@dataclass
class TrainingData:
    """Training images in memory, (N,3,S,S) in [0,1].

    normal: anomaly-free images; anomalous/anomalous_masks: optional real anomalies with their masks (KSDD2
    supervised mode), mixed into stage 2 with probability `supervised_probability` per sample.
    """

    normal: torch.Tensor
    anomalous: torch.Tensor | None = None
    anomalous_masks: torch.Tensor | None = None
    supervised_probability: float = 0.5

    def __post_init__(self) -> None:
        if self.normal.ndim != 4 or self.normal.shape[1] != 3 or len(self.normal) == 0:
            raise ValueError(f"TrainingData.normal must be a non-empty (N,3,S,S) tensor, got {tuple(self.normal.shape)}")
        if (self.anomalous is None) != (self.anomalous_masks is None):
            raise ValueError("TrainingData.anomalous and anomalous_masks must be given together")
        if self.anomalous is not None and len(self.anomalous) != len(self.anomalous_masks):
            raise ValueError("TrainingData.anomalous and anomalous_masks differ in length")

    def batch(self, size: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        """Random sampling with replacement, as the paper's 'epochs' of 1000 random iterations.

        For a CUDA target the rows are gathered into pinned host memory and copied asynchronously (gather_to).
        """
        index = torch.randint(len(self.normal), (size,), generator=generator)
        return gather_to(self.normal, index, device)


def trained_modules(model: DSR, stage: str) -> list[nn.Module]:
    """The modules a stage optimises; everything else is frozen for it."""
    if stage == "stage1":
        return [model.latent]
    if stage == "stage2":
        return [model.restriction_hi, model.restriction_lo, model.object_decoder, model.anomaly_detection]
    if stage == "stage3":
        return [model.upsampling]
    raise ValueError(f"unknown stage {stage!r}; known stages: stage1, stage2, stage3")


def stage1_step(model: DSR, data: TrainingData, generator: torch.Generator, device: torch.device
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """VQ-VAE step: reconstruction MSE + commitment loss; the codebooks learn by EMA (training mode)."""
    return stage1_loss(model, data.batch(model.config.stage1_batch_size, generator, device))


def stage1_loss(model: DSR, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Stage-1 loss of a given batch (B,3,H,W); in training mode the forward pass also updates the codebooks.

    Encoders and decoder run under the config's precision (bf16 autocast when it resolves to bf16); the
    quantisers' nearest-code decisions and EMA updates stay fp32, and the loss is computed in fp32 at least.
    """
    with model.autocast(images.device):
        reconstruction, encoding = model.latent(images)
    mse = F.mse_loss(reconstruction.to(torch.promote_types(images.dtype, torch.float32)), images)
    return mse + encoding.loss, {"loss_reconstruction": mse, "loss_commitment": encoding.loss}


def stage2_step(model: DSR, data: TrainingData, generator: torch.Generator, device: torch.device,
                strategy: SamplingStrategy, textures: TextureSource | None
                ) -> tuple[None, dict[str, torch.Tensor]]:
    """Anomalies in feature space (or image space for DSR_img), restore, decode, detect; paper Eq. 3.

    Runs its own backward pass (in micro-batches of config.micro_batch_size) and returns (None, loss parts).
    """
    c = model.config
    images = random_rotation(data.batch(c.batch_size, generator, device), c.stage2_rotation_probability,
                             c.max_rotation_degrees, generator)
    with torch.no_grad():
        clean = model.latent.encode(images)
        if c.anomaly_source == "image":
            if textures is None:
                raise ValueError("anomaly_source='image' needs a TextureSource (config.texture_dir or synthesised)")
            anomalous_images, mask = texture_anomalies(images, textures, generator, c)
            anomalous = model.latent.encode(anomalous_images)
            q_hi, q_lo = anomalous.q_hi, anomalous.q_lo
        else:
            mask = perlin_masks(len(images), c.image_size, generator, c, device)
            perturbed = feature_anomalies(model.latent, clean, mask, strategy, c, generator)
            q_hi, q_lo, mask = perturbed.q_hi, perturbed.q_lo, perturbed.mask
        weight = None
        if data.anomalous is not None:
            q_hi, q_lo, mask, weight = _mix_real_anomalies(model, data, q_hi, q_lo, mask, generator, device)
    return None, stage2_backward(model, images, clean, q_hi, q_lo, mask, weight)


def stage2_backward(model: DSR, images: torch.Tensor, clean: LatentEncoding, q_hi: torch.Tensor, q_lo: torch.Tensor,
                    mask: torch.Tensor, weight: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Eq. 3 on a given anomalous batch and its backward pass (gradients accumulate); returns the loss parts.

    images (B,3,H,W) clean; clean: their latent encoding (the feature targets); q_hi, q_lo: the anomalous
    quantised features; mask (B,1,H,W) the ground truth; weight (B,) optional reconstruction weights.
    """
    c = model.config
    # Micro-batches: every term is a per-sample mean (InstanceNorm, no batch statistics), so accumulating
    # share-weighted gradients over chunks equals the whole-batch gradient while holding a chunk's activations.
    chunk = c.micro_batch_size or len(images)
    parts = {"loss_focal": 0.0, "loss_feature": 0.0, "loss_image": 0.0}
    for start in range(0, len(images), chunk):
        at = slice(start, start + chunk)
        share = len(images[at]) / len(images)
        out = model(q_hi[at], q_lo[at], run_upsampling=False)
        terms = stage2_loss(c, out.detection_logits, mask[at], out.restored.z_hi, out.restored.z_lo, clean.q_hi[at],
                            clean.q_lo[at], out.object_image, images[at], None if weight is None else weight[at])
        (terms.total * share).backward()
        for name, value in zip(parts, (terms.focal, terms.feature, terms.image)):
            parts[name] += share * float(value.detach())
    return {name: torch.tensor(value, dtype=torch.float64) for name, value in parts.items()}


def _mix_real_anomalies(model: DSR, data: TrainingData, q_hi: torch.Tensor, q_lo: torch.Tensor, mask: torch.Tensor,
                        generator: torch.Generator, device: torch.device):
    """Replace some samples by real annotated anomalies (their own features and masks, no reconstruction target)."""
    b = len(q_hi)
    use_real = torch.rand(b, generator=generator) < data.supervised_probability
    index = torch.randint(len(data.anomalous), (b,), generator=generator)
    if not use_real.any():
        return q_hi, q_lo, mask, torch.ones(b, device=device)
    picked = use_real.nonzero().squeeze(1)
    real = model.latent.encode(gather_to(data.anomalous, index[picked], device))
    q_hi, q_lo, mask = q_hi.clone(), q_lo.clone(), mask.clone()
    picked_dev = picked.to(device)
    q_hi[picked_dev], q_lo[picked_dev] = real.q_hi, real.q_lo
    mask[picked_dev] = data.anomalous_masks[index[picked]].to(device, mask.dtype)
    return q_hi, q_lo, mask, (~use_real).to(device, torch.float32)


def stage3_step(model: DSR, data: TrainingData, generator: torch.Generator, device: torch.device
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Upsampling module on colour-blob image anomalies; focal loss against the full-resolution mask."""
    c = model.config
    images = random_rotation(data.batch(c.batch_size, generator, device), c.stage3_rotation_probability,
                             c.max_rotation_degrees, generator)
    images, mask = colour_blob_anomalies(images, generator, c)
    return stage3_loss(model, images, mask)


def stage3_loss(model: DSR, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Focal loss of the upsampling module on given (anomalous) images (B,3,H,W) and their masks (B,1,H,W)."""
    c = model.config
    with torch.no_grad():
        encoding = model.latent.encode(images)
        out = model(encoding.q_hi, encoding.q_lo, run_upsampling=False)
    with model.autocast(images.device):
        logits = model.upsample(out.object_image, out.general_image, out.detection_logits)
    logits = logits.to(torch.promote_types(out.detection_logits.dtype, torch.float32))  # undo bf16 autocast
    loss = focal_loss(torch.softmax(logits, dim=1), mask, c.focal_gamma)
    return loss, {"loss_focal": loss}
