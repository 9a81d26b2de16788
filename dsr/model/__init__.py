"""DSR's networks. `DSR` assembles them; each part lives in its own module."""

from dsr.model.dsr import DSR, DSROutput, Prediction, Restored, parameter_counts
from dsr.model.latent import DiscreteLatentModel, LatentEncoding
from dsr.model.quantizer import Quantized, VectorQuantizer

__all__ = [
    "DSR", "DSROutput", "Prediction", "Restored", "parameter_counts", "DiscreteLatentModel", "LatentEncoding",
    "Quantized", "VectorQuantizer",
]
