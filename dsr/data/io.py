"""Reading images and masks from disk into tensors, with errors that name the file.

Images become float tensors (3, S, S) in [0, 1] and masks float tensors (1, S, S) in {0, 1}. Nothing here ever
writes to disk.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

CHANNEL_ORDERS = ("rgb", "bgr")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

# What PIL raises for unreadable files: unknown format, truncated or corrupt data, broken PNG chunks.
_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError)


def is_image_file(path: Path) -> bool:
    """True for a visible file with one of IMAGE_EXTENSIONS (case-insensitive)."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def check_channel_order(channel_order: str) -> str:
    if channel_order not in CHANNEL_ORDERS:
        raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}")
    return channel_order


def check_image_size(image_size: int) -> int:
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size <= 0:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    return image_size


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")


def header_size(path: Path, what: str = "image") -> tuple[int, int]:
    """(width, height) from the file header, after checking the file's structure (PIL `verify`: chunk CRCs for
    PNG). Cheap: nothing is decoded. Raises FileNotFoundError / ValueError naming the file."""
    path = Path(path)
    _require_file(path, what)
    try:
        with Image.open(path) as im:
            size = im.size
            im.verify()
    except _DECODE_ERRORS as error:
        raise ValueError(f"{what} {path} is corrupt or not an image: {error}") from error
    return size


def _decode(path: Path, what: str) -> Image.Image:
    _require_file(path, what)
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except _DECODE_ERRORS as error:
        raise ValueError(f"{what} {path} is corrupt or not an image: {error}") from error


def decode_size(path: Path, what: str = "image") -> tuple[int, int]:
    """Decode the whole file (a truncated or corrupt one fails here, not in a trial); its (width, height)."""
    return _decode(Path(path), what).size


def _to_uint8_array(im: Image.Image, mode: str) -> np.ndarray:
    """An 8-bit array in `mode` ("RGB" or "L"); 16-bit and float images are scaled down, not clipped."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I") and values.max(initial=0) > 255 else 255.0
        if im.mode == "F" and values.max(initial=0) <= 1.0:
            top = 1.0
        gray = np.clip(np.round(values / top * 255.0), 0, 255).astype(np.uint8)
        im = Image.fromarray(gray, mode="L")
    return np.asarray(im.convert(mode))


def read_image(
    path: Path, image_size: int, channel_order: str = "rgb", antialias: bool = False
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Decode an image into a float tensor (3, S, S) in [0, 1] and also return its original (width, height).

    Grayscale and RGBA files become 3-channel RGB (as OpenCV's default read does). Resizing is bilinear without
    antialiasing by default, as the reference's `cv2.resize` (the paper's protocol). channel_order="bgr" swaps the
    channels like OpenCV's loading. Raises FileNotFoundError / ValueError naming the file.
    """
    path = Path(path)
    im = _decode(path, "image")
    original_size = im.size
    array = _to_uint8_array(im, "RGB")  # (H, W, 3) uint8
    image = torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)  # (3, H, W)
    if image.shape[1:] != (image_size, image_size):
        image = F.interpolate(image[None], size=(image_size, image_size), mode="bilinear", align_corners=False,
                              antialias=antialias)[0].clamp_(0.0, 1.0)  # (3, S, S)
    if check_channel_order(channel_order) == "bgr":
        image = image.flip(0)
    return image.contiguous(), original_size


def read_mask(path: Path, image_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Decode a mask into a float tensor (1, S, S) in {0, 1} (any non-zero pixel is anomalous), resized with
    nearest neighbour, and also return its original (width, height)."""
    path = Path(path)
    im = _decode(path, "mask")
    original_size = im.size
    binary = torch.from_numpy(_to_uint8_array(im, "L") > 0).float()  # (H, W)
    mask = binary[None]  # (1, H, W)
    if mask.shape[1:] != (image_size, image_size):
        mask = F.interpolate(mask[None], size=(image_size, image_size), mode="nearest-exact")[0]  # (1, S, S)
    return mask.contiguous(), original_size


def mask_is_anomalous(path: Path) -> bool:
    """True when the mask file has any non-zero pixel (the KSDD2 labelling rule)."""
    path = Path(path)
    return bool(_to_uint8_array(_decode(path, "mask"), "L").any())
