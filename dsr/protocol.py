"""The reference's evaluation protocol per dataset kind, in one place: which centre crop its pixel metrics use.

The reference code scores MVTec AD pixels on the 224x224 centre crop of its 256x256 maps (and masks); image
scores are not cropped. Other datasets are scored on the whole map.
"""

from __future__ import annotations

REFERENCE_CROPS = {"mvtec": (224, 256)}  # dataset kind -> (crop side, image side) of the reference's evaluation


def evaluation_crop(dataset_kind: str, image_size: int) -> int | None:
    """The centre crop (pixels) for pixel metrics on `dataset_kind` at `image_size`, or None for the whole map.

    At other image sizes the crop keeps the reference's fraction (7/8), so every preset follows one protocol.
    """
    if dataset_kind not in REFERENCE_CROPS:
        return None
    crop, side = REFERENCE_CROPS[dataset_kind]
    return image_size * crop // side
