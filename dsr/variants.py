"""The paper's Table 6 ablation variants as data: a name -> the DSRConfig fields it changes.

Add a variant by adding a line; tests parametrize over this registry.
"""

from __future__ import annotations

from typing import Any

from dsr.config import DSRConfig

VARIANTS: dict[str, dict[str, Any]] = {
    "DSR": {},
    "DSR_img": {"anomaly_source": "image"},  # (a) image-space anomalies instead of feature-space ones
    "DSR_random": {"sampling_strategy": "uniform"},  # (b) replacement codes drawn uniformly, no ranking
    "DSR_Limg": {"loss_feat_weight": 0.0},  # (c) only the image term beside the focal loss
    "DSR_Lfeat": {"loss_img_weight": 0.0},  # (c) only the feature term beside the focal loss
    "DSR_U-": {"use_upsampling": False},  # (d) no upsampling module: the map is the detection output
}


def apply_variant(config: DSRConfig, name: str) -> DSRConfig:
    """`config` with the variant's fields set; raises ValueError listing the known variants for an unknown name."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; known variants: {', '.join(VARIANTS)}")
    return config.replace(**VARIANTS[name])
