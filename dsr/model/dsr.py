"""DSR: the discrete latent model plus the four stage-2/3 networks, and inference."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from dsr.config import DSRConfig
from dsr.model.latent import DiscreteLatentModel
from dsr.model.object_decoder import ObjectDecoder
from dsr.model.restriction import SubspaceRestriction
from dsr.model.unet import AnomalyDetectionModule, UpsamplingModule
from dsr.precision import autocast as precision_autocast


class Restored(NamedTuple):
    z_hi: torch.Tensor  # restored pre-quantisation features (B, D, H/4, W/4)
    z_lo: torch.Tensor  # (B, D, H/8, W/8)
    q_hi: torch.Tensor  # restored features re-quantised with the frozen codebooks
    q_lo: torch.Tensor


class DSROutput(NamedTuple):
    restored: Restored
    object_image: torch.Tensor  # (B, 3, H, W) object-specific decoder
    general_image: torch.Tensor  # (B, 3, H, W) general appearance decoder
    detection_logits: torch.Tensor  # (B, 2, H, W)
    upsampled_logits: torch.Tensor | None  # (B, 2, H, W), None when the upsampling module is not run


class Prediction(NamedTuple):
    image_scores: torch.Tensor  # (B,)
    pixel_maps: torch.Tensor  # (B, H, W) anomaly probability


class DSR(nn.Module):
    """The whole DSR system; `forward` runs the stage-2/3 networks on (possibly anomalous) quantised features."""

    def __init__(self, config: DSRConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.latent = DiscreteLatentModel(c)
        self.restriction_hi = SubspaceRestriction(c.embedding_dim, c.restriction_width)
        self.restriction_lo = SubspaceRestriction(c.embedding_dim, c.restriction_width)
        self.object_decoder = ObjectDecoder(2 * c.embedding_dim, c.object_decoder_width, c.object_decoder_bottleneck,
                                            c.vq_hidden, c.vq_residual_hidden, c.vq_residual_layers)
        self.anomaly_detection = AnomalyDetectionModule(c.unet_width)
        self.upsampling = UpsamplingModule(c.unet_width)

    def restore(self, q_hi: torch.Tensor, q_lo: torch.Tensor) -> Restored:
        """Project both levels back onto the normal subspace and re-quantise with the frozen codebooks."""
        z_hi = self.restriction_hi(q_hi)
        z_lo = self.restriction_lo(q_lo)
        return Restored(z_hi, z_lo, self.latent.quantizer_hi.quantize(z_hi), self.latent.quantizer_lo.quantize(z_lo))

    def detect(self, object_image: torch.Tensor, general_image: torch.Tensor) -> torch.Tensor:
        """Anomaly detection logits from the two decoders' images (detached: the paper trains it on fixed inputs)."""
        return self.anomaly_detection(torch.cat((object_image.detach(), general_image.detach()), dim=1))

    def upsample(self, object_image: torch.Tensor, general_image: torch.Tensor,
                 detection_logits: torch.Tensor) -> torch.Tensor:
        """Upsampling module logits from both images and the detection softmax."""
        probs = torch.softmax(detection_logits, dim=1)
        return self.upsampling(torch.cat((object_image.detach(), general_image.detach(), probs.detach()), dim=1))

    def forward(self, q_hi: torch.Tensor, q_lo: torch.Tensor, run_upsampling: bool | None = None,
                precision: str | None = None) -> DSROutput:
        """Stage-2/3 networks on quantised features (B,D,H/4,W/4), (B,D,H/8,W/8); each decoder runs once.

        precision "bf16" (or "auto" on a bf16-capable GPU) autocasts the decoders and UNets; the restriction
        modules and every nearest-code decision stay in fp32, so bf16 never changes which code a feature maps to.
        """
        if run_upsampling is None:
            run_upsampling = self.config.use_upsampling
        restored = self.restore(q_hi, q_lo)
        with self.autocast(q_hi.device, precision):
            object_image = self.object_decoder(self.latent.join(restored.q_hi, restored.q_lo))
            general_image = self.latent.decode(q_hi, q_lo)
            detection_logits = self.detect(object_image, general_image)
            upsampled = self.upsample(object_image, general_image, detection_logits) if run_upsampling else None
        dtype = torch.promote_types(q_hi.dtype, torch.float32)  # undo bf16 autocast; float64 stays float64
        return DSROutput(restored, object_image.to(dtype), general_image.to(dtype), detection_logits.to(dtype),
                         None if upsampled is None else upsampled.to(dtype))

    def autocast(self, device: torch.device, precision: str | None = None) -> torch.autocast:
        """bf16 autocast context when precision (default: the config's) resolves to "bf16" on `device`, else a
        disabled one ("auto": bf16 on a bf16-capable GPU, fp32 on the CPU; see dsr.precision)."""
        return precision_autocast(device, precision or self.config.precision)

    def image_scores(self, detection_logits: torch.Tensor) -> torch.Tensor:
        """Max of the anomaly probability after a k x k mean filter (zero padding), per image: (B,)."""
        probs = torch.softmax(detection_logits.float(), dim=1)[:, 1:]
        k = self.config.score_filter_size
        return F.avg_pool2d(probs, k, stride=1, padding=k // 2).amax(dim=(1, 2, 3))

    @torch.inference_mode()
    def predict(self, images: torch.Tensor, precision: str | None = None, chunk_size: int | None = None
                ) -> Prediction:
        """Image scores (B,) and pixel anomaly maps (B,H,W) for images (B,3,H,W) in [0,1].

        precision: "auto", "fp32" or "bf16" (see `forward`); default the config's. chunk_size: images per
        forward pass; default on the CPU one 256x256 image's worth of pixels per pass (1 image at 256, 16 at 64):
        at 256 one image at a time is both faster per image and smaller than a batch (benchmarks/speed.py);
        elsewhere the whole batch. Results do not depend on it beyond float rounding.
        """
        if chunk_size is None:
            pixels = images.shape[-1] * images.shape[-2]
            chunk_size = max(1, 256 * 256 // pixels) if images.device.type == "cpu" else len(images)
        parts = [self._predict_chunk(chunk, precision) for chunk in images.split(max(1, chunk_size))]
        return Prediction(torch.cat([p.image_scores for p in parts]), torch.cat([p.pixel_maps for p in parts]))

    def _predict_chunk(self, images: torch.Tensor, precision: str | None) -> Prediction:
        encoding = self.latent.encode(images)
        out = self.forward(encoding.q_hi, encoding.q_lo, precision=precision)
        map_logits = out.upsampled_logits if out.upsampled_logits is not None else out.detection_logits
        pixel_maps = torch.softmax(map_logits.float(), dim=1)[:, 1]
        return Prediction(self.image_scores(out.detection_logits), pixel_maps)


def parameter_counts(model: DSR) -> dict[str, int]:
    """Parameters per part (the latent model counted with its EMA weight copies, as the reference does)."""
    parts = {
        "discrete_latent_model": model.latent,
        "subspace_restriction_hi": model.restriction_hi,
        "subspace_restriction_lo": model.restriction_lo,
        "object_decoder": model.object_decoder,
        "anomaly_detection": model.anomaly_detection,
        "upsampling": model.upsampling,
    }
    return {name: sum(p.numel() for p in part.parameters()) for name, part in parts.items()}
