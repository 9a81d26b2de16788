"""DSRConfig: every architectural, anomaly-generation, loss and training knob of DSR in one typed dataclass.

The defaults are the reference architecture and the paper's training schedule, so `DSRConfig()` *is* the paper's
model. A study sweeps a knob by overriding the field of the same name (`DSRConfig(**overrides)` or
`config.replace(...)`); every value is validated on construction and a bad one raises a `ValueError` that names the
field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

CHANNEL_ORDERS = ("rgb", "bgr")
ANOMALY_SOURCES = ("feature", "image")
PRECISIONS = ("auto", "fp32", "bf16")  # dsr.precision resolves "auto" per device


@dataclass(frozen=True)
class DSRConfig:
    # --- data ---
    image_size: int = 256  # images are resized to image_size x image_size, values in [0, 1], no normalisation
    channel_order: str = "rgb"  # "bgr" reproduces the reference's OpenCV loading (needed for reference weights)
    antialias: bool = False  # the reference resizes with plain bilinear interpolation (cv2.resize), no antialiasing

    # --- discrete latent model (VQ-VAE-2 style, stage 1) ---
    vq_hidden: int = 128  # encoder / general-decoder width ("num_hiddens" in the reference)
    vq_residual_hidden: int = 64  # inner width of the residual blocks
    vq_residual_layers: int = 2  # residual blocks per residual stack
    embedding_dim: int = 128  # code dimension of both codebooks
    codebook_size: int = 4096  # K, codes per level; a stage-1 choice (one stage-1 model per K)
    commitment_cost: float = 0.25
    ema_decay: float = 0.99
    ema_epsilon: float = 1e-5
    # Codes whose EMA usage falls below this are moved onto current encoder outputs during stage 1. Not in the
    # reference code: without it a stage 1 trained from scratch here collapsed to one code (0 = reference EMA).
    codebook_restart_threshold: float = 1.0  # in EMA counts per batch, as in Jukebox

    # --- stage-2/3 networks ---
    restriction_width: int = 128  # base width of the subspace restriction UNets (reference: = embedding_dim)
    object_decoder_width: int = 256  # first width of the object-specific decoder (reference: 2 * embedding_dim)
    object_decoder_bottleneck: int = 64  # channels of its 1x1 bottleneck
    unet_width: int = 64  # base width of the anomaly detection and upsampling UNets
    use_upsampling: bool = True  # False is the paper's DSR_U- ablation: pixel map = detection output

    # --- feature-space anomaly generation ---
    anomaly_source: str = "feature"  # "image" is the paper's DSR_img ablation (DRAEM-style texture paste)
    sampling_strategy: str = "similarity_bound"  # name in dsr.anomalies.STRATEGIES
    similarity_bound: float = 0.05  # lambda_s: the paper's DSR (Table 6 = Table 5's 0.05 row); reference code: 0.2
    excluded_nearest_fraction: float = 0.05  # the nearest 5% of codes are never used as replacements
    sampling_params: dict[str, Any] = field(default_factory=dict)  # extra parameters of the chosen strategy
    anomaly_probability: float = 0.5  # probability that a training sample gets a non-empty anomaly mask
    both_levels_probability: float = 0.5  # else lo only or hi only, half each
    perlin_min_scale_exp: int = 0  # Perlin scales are 2**randint(min, max) per axis
    perlin_max_scale_exp: int = 5  # inclusive
    perlin_threshold: float = 0.5
    texture_dir: str | None = None  # texture images for anomaly_source="image"; None: synthesised textures

    # --- losses (paper Eq. 3) ---
    focal_gamma: float = 2.0
    loss_focal_weight: float = 1.0
    loss_feat_weight: float = 1.0  # 0 removes the feature term (DSR_Limg)
    loss_img_weight: float = 10.0  # 0 removes the image term (DSR_Lfeat)

    # --- training ---
    batch_size: int = 8
    micro_batch_size: int = 0  # stage-2 forward/backward in chunks of this many (0: whole batch); same gradients
    stage1_iterations: int = 100_000  # the reference trains stage 1 once on ImageNet; this is our default budget
    stage1_lr: float = 2e-4
    stage1_batch_size: int = 32
    stage2_iterations: int = 100_000  # 100 epochs x 1000 iterations
    stage2_lr: float = 2e-4
    stage3_iterations: int = 50_000  # 50 epochs x 1000 iterations
    stage3_lr: float = 2e-4
    lr_decay_at: float = 0.8  # learning rate x lr_decay_factor after this fraction of a stage
    lr_decay_factor: float = 0.1
    # The reference's stage-3 milestones lie past its 50 epochs, so its stage-3 learning rate never decays (1.0).
    stage3_lr_decay_at: float = 1.0
    stage2_rotation_probability: float = 0.4
    stage3_rotation_probability: float = 0.3
    max_rotation_degrees: float = 90.0
    stage3_blend_max: float = 0.8  # beta ~ U[0, stage3_blend_max) in the colour-blob anomalies
    # "bf16" autocasts the trained networks' forward passes; "auto": bf16 + TF32 on a bf16-capable GPU, fp32 on
    # the CPU (dsr.precision). fp32 stays the default: the paper trained in fp32, bf16 training is not yet measured
    precision: str = "fp32"
    seed: int = 0

    # --- evaluation ---
    score_filter_size: int = 21  # mean filter on the detection map before the image-score max
    # Pixel metrics' centre crop: "protocol" = the reference's for the dataset kind (MVTec: 224 of 256, see
    # dsr.protocol; others: whole maps), an int = that crop, None = whole maps
    eval_center_crop: int | str | None = "protocol"

    def __post_init__(self) -> None:
        _validate(self)

    def replace(self, **changes: Any) -> "DSRConfig":
        """A copy with some fields changed (validated again)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"unknown DSRConfig field(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "DSRConfig":
        """Build from a dict (e.g. a checkpoint's), rejecting unknown keys by name."""
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown DSRConfig field(s): {', '.join(unknown)}")
        return cls(**values)

    @property
    def latent_size_hi(self) -> int:
        return self.image_size // 4

    @property
    def latent_size_lo(self) -> int:
        return self.image_size // 8


def _require(condition: bool, name: str, message: str, value: Any) -> None:
    if not condition:
        raise ValueError(f"DSRConfig.{name} {message}, got {value!r}")


def _validate(c: DSRConfig) -> None:
    positive_ints = [
        "vq_hidden", "vq_residual_hidden", "vq_residual_layers", "embedding_dim", "codebook_size",
        "restriction_width", "object_decoder_width", "object_decoder_bottleneck", "unet_width", "batch_size",
        "stage1_batch_size", "score_filter_size",
    ]
    for name in positive_ints:
        value = getattr(c, name)
        _require(isinstance(value, int) and not isinstance(value, bool) and value > 0, name,
                 "must be a positive integer", value)
    for name in ("stage1_iterations", "stage2_iterations", "stage3_iterations", "micro_batch_size"):
        value = getattr(c, name)
        _require(isinstance(value, int) and not isinstance(value, bool) and value >= 0, name,
                 "must be a non-negative integer", value)
    _require(isinstance(c.image_size, int) and c.image_size >= 64 and c.image_size % 32 == 0, "image_size",
             "must be a multiple of 32 and at least 64 (the lo latent is /8 and its restriction UNet pools twice "
             "more; InstanceNorm needs more than one pixel)", c.image_size)
    _require(c.vq_hidden % 2 == 0, "vq_hidden", "must be even (the decoders halve it)", c.vq_hidden)
    _require(c.codebook_size >= 2, "codebook_size", "must be at least 2", c.codebook_size)
    _require(c.channel_order in CHANNEL_ORDERS, "channel_order", f"must be one of {CHANNEL_ORDERS}", c.channel_order)
    _require(c.anomaly_source in ANOMALY_SOURCES, "anomaly_source", f"must be one of {ANOMALY_SOURCES}",
             c.anomaly_source)
    _require(c.precision in PRECISIONS, "precision", f"must be one of {PRECISIONS}", c.precision)
    _require(isinstance(c.sampling_strategy, str) and c.sampling_strategy != "", "sampling_strategy",
             "must be a strategy name", c.sampling_strategy)
    _require(isinstance(c.sampling_params, dict), "sampling_params", "must be a dict", c.sampling_params)
    _require(0.0 < c.similarity_bound < 1.0, "similarity_bound", "(lambda_s) must lie in (0, 1)",
             c.similarity_bound)
    _require(0.0 <= c.excluded_nearest_fraction < 1.0, "excluded_nearest_fraction", "must lie in [0, 1)",
             c.excluded_nearest_fraction)
    for name in ("anomaly_probability", "both_levels_probability", "stage2_rotation_probability",
                 "stage3_rotation_probability", "lr_decay_at", "stage3_lr_decay_at", "perlin_threshold"):
        value = getattr(c, name)
        _require(0.0 <= value <= 1.0, name, "must lie in [0, 1]", value)
    _require(0.0 <= c.stage3_blend_max < 1.0, "stage3_blend_max", "must lie in [0, 1)", c.stage3_blend_max)
    _require(0 <= c.perlin_min_scale_exp <= c.perlin_max_scale_exp, "perlin_max_scale_exp",
             "must be >= perlin_min_scale_exp >= 0", (c.perlin_min_scale_exp, c.perlin_max_scale_exp))
    for name in ("commitment_cost", "focal_gamma", "loss_focal_weight", "loss_feat_weight", "loss_img_weight",
                 "max_rotation_degrees"):
        value = getattr(c, name)
        _require(value >= 0.0, name, "must be >= 0", value)
    _require(c.loss_focal_weight + c.loss_feat_weight + c.loss_img_weight > 0, "loss_focal_weight",
             "and the other loss weights must not all be 0", 0)
    _require(0.0 < c.ema_decay < 1.0, "ema_decay", "must lie in (0, 1)", c.ema_decay)
    _require(c.ema_epsilon > 0.0, "ema_epsilon", "must be > 0", c.ema_epsilon)
    _require(c.codebook_restart_threshold >= 0.0, "codebook_restart_threshold", "must be >= 0",
             c.codebook_restart_threshold)
    for name in ("stage1_lr", "stage2_lr", "stage3_lr"):
        _require(getattr(c, name) > 0.0, name, "must be > 0", getattr(c, name))
    _require(0.0 < c.lr_decay_factor <= 1.0, "lr_decay_factor", "must lie in (0, 1]", c.lr_decay_factor)
    _require(c.score_filter_size % 2 == 1, "score_filter_size", "must be odd", c.score_filter_size)
    crop = c.eval_center_crop
    _require(crop is None or crop == "protocol" or (isinstance(crop, int) and 0 < crop <= c.image_size),
             "eval_center_crop", "must be 'protocol', None or an integer in (0, image_size]", crop)


# Named configurations. A preset is only different numbers: "small" keeps every part of DSR but narrow and at
# 64x64 so that all three stages train on a 2-core CPU in minutes.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "small": dict(
        image_size=64,
        vq_hidden=32,
        vq_residual_hidden=16,
        embedding_dim=32,
        codebook_size=256,
        restriction_width=32,
        object_decoder_width=64,
        object_decoder_bottleneck=32,
        unet_width=16,
        batch_size=8,
        stage1_iterations=3000,  # shared by every trial of a study; the demo adds 1,200 general photographs
        stage1_lr=1e-3,
        stage1_batch_size=16,
        stage2_iterations=400,
        stage2_lr=1e-3,
        stage3_iterations=100,
        stage3_lr=1e-3,
    ),
    # how far fidelity moves with capacity: 128 px, twice the small preset's widths, 1.5x its stage-2 iterations.
    # Measured CPU per iteration (one thread, loaded 2-core EPYC): stage 2 4.8 s (small: 0.6 s), stage 3 4.6 s, so
    # one category is about an hour on two cores (stage 1, shared by a study's categories, comes on top).
    "medium": dict(
        image_size=128,
        vq_hidden=64,
        vq_residual_hidden=32,
        embedding_dim=64,
        codebook_size=512,
        restriction_width=64,
        object_decoder_width=128,
        object_decoder_bottleneck=32,
        unet_width=32,
        batch_size=8,
        stage1_iterations=3000,
        stage1_lr=5e-4,
        stage1_batch_size=16,
        stage2_iterations=600,
        stage2_lr=5e-4,
        stage3_iterations=150,
        stage3_lr=5e-4,
    ),
    "tiny": dict(  # for tests: every module present, seconds per stage
        image_size=64,
        vq_hidden=16,
        vq_residual_hidden=8,
        vq_residual_layers=1,
        embedding_dim=8,
        codebook_size=32,
        restriction_width=8,
        object_decoder_width=16,
        object_decoder_bottleneck=8,
        unet_width=8,
        batch_size=2,
        stage1_iterations=4,
        stage1_batch_size=2,
        stage2_iterations=4,
        stage3_iterations=2,
    ),
}


def preset(name: str, **overrides: Any) -> DSRConfig:
    """The named configuration ("paper", "small", "medium", "tiny"), optionally with some fields overridden."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    return DSRConfig(**{**PRESETS[name], **overrides})
