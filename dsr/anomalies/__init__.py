"""Synthetic anomalies for DSR training: Perlin masks, feature-space code replacement (with pluggable
sampling strategies), image-space texture / colour anomalies, and the rotation augmentation."""

from dsr.anomalies.augment import random_rotation, rotate
from dsr.anomalies.feature import BOTH, HI_ONLY, LO_ONLY, FeatureAnomalies, feature_anomalies
from dsr.anomalies.image import blend, colour_blob_anomalies, texture_anomalies
from dsr.anomalies.perlin import perlin_masks, perlin_noise
from dsr.anomalies.strategies import STRATEGIES, SamplingStrategy, make_strategy, register
from dsr.anomalies.textures import TextureSource, synthesise_textures

__all__ = [
    "BOTH", "HI_ONLY", "LO_ONLY", "FeatureAnomalies", "STRATEGIES", "SamplingStrategy", "TextureSource",
    "blend", "colour_blob_anomalies", "feature_anomalies", "make_strategy", "perlin_masks", "perlin_noise",
    "random_rotation", "register", "rotate", "synthesise_textures", "texture_anomalies",
]
