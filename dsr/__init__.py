"""dsr: the torch core of DSR (dual subspace re-projection, ECCV 2022). No Ray in here."""

from dsr.config import DSRConfig, PRESETS, preset
from dsr.model import DSR, Prediction, parameter_counts

__all__ = ["DSRConfig", "PRESETS", "preset", "DSR", "Prediction", "parameter_counts"]
