"""Texture sources for DRAEM-style image-space anomalies (Table 6's DSR_img): a folder of images or synthesis."""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from dsr.anomalies import _random
from dsr.anomalies.perlin import perlin_noise, random_scales

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
SYNTHETIC_KINDS = ("perlin_colour", "stripes", "checker", "marble")
CACHE_SIZE = 128  # decoded folder textures kept in memory (~25 MB at 256 px)


class TextureSource:
    """Textures (count, 3, S, S) in [0, 1] for the texture-paste anomalies.

    directory: a folder searched recursively for images (e.g. DTD, which DRAEM uses); files are decoded on
    demand (a small cache keeps recent ones). None: textures are synthesised (see `synthesise_textures`), so no
    data set is needed; these are synthetic patterns, not DTD.
    Raises FileNotFoundError if the folder does not exist and ValueError if it holds no readable image.
    """

    def __init__(self, directory: str | Path | None, image_size: int) -> None:
        if image_size <= 0:
            raise ValueError(f"TextureSource: image_size must be positive, got {image_size!r}")
        self.image_size = int(image_size)
        self.directory = None if directory is None else Path(directory)
        self.paths: list[Path] = []
        if self.directory is not None:
            if not self.directory.is_dir():
                raise FileNotFoundError(f"texture folder {str(self.directory)!r} does not exist")
            candidates = sorted(p for p in self.directory.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
            self.paths = [p for p in candidates if _readable(p)]
            if not self.paths:
                raise ValueError(f"texture folder {str(self.directory)!r} has no readable images "
                                 f"({len(candidates)} file(s) with extensions {', '.join(IMAGE_EXTENSIONS)})")
        self._cache: OrderedDict[int, Tensor] = OrderedDict()  # recently decoded textures (uint8), picklable

    @property
    def synthesised(self) -> bool:
        return self.directory is None

    def sample(self, count: int, generator: torch.Generator, device: torch.device | str = "cpu") -> Tensor:
        """`count` random textures (count, 3, S, S) float in [0, 1] on `device`."""
        if self.synthesised:
            return synthesise_textures(count, self.image_size, generator, device)
        picks = _random.randint(len(self.paths), (count,), generator, "cpu").tolist()
        if not picks:
            return torch.zeros(0, 3, self.image_size, self.image_size, device=device)
        return torch.stack([self._load(i) for i in picks]).to(device=device, dtype=torch.float32) / 255.0

    def _load(self, index: int) -> Tensor:
        """Texture `index` as (3, S, S) uint8, from the cache or decoded and resized."""
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        with Image.open(self.paths[index]) as image:
            image = image.convert("RGB").resize((self.image_size, self.image_size), Image.BILINEAR)
            texture = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
        self._cache[index] = texture
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return texture


def _readable(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            image.size  # noqa: B018  (parses the header)
        return True
    except (OSError, UnidentifiedImageError):
        return False


def _fractal_noise(count: int, size: int, generator: torch.Generator, device: torch.device | str,
                   octaves: int = 4) -> Tensor:
    """(count, S, S) sum of Perlin octaves (random base scale 2..8), normalised to [0, 1] per sample."""
    base = random_scales(count, generator, 1, 3, device)
    total = torch.zeros(count, size, size, device=device)
    for octave in range(octaves):  # a loop over octaves, not samples
        total += perlin_noise(size, (base * 2 ** octave).clamp_max(size), generator, device) / 2 ** octave
    low = total.flatten(1).amin(1)[:, None, None]
    high = total.flatten(1).amax(1)[:, None, None]
    return (total - low) / (high - low).clamp_min(1e-6)


def synthesise_textures(count: int, size: int, generator: torch.Generator,
                        device: torch.device | str = "cpu") -> Tensor:
    """(count, 3, S, S) synthetic textures in [0, 1], one of SYNTHETIC_KINDS per sample, uniformly:
    perlin_colour (independent fractal noise per channel), stripes and checker (two random colours, random
    period and angle), marble (two colours mixed by a sine of the position warped by fractal noise).
    All kinds are computed for the batch and selected per sample (vectorised; cheap at these sizes).
    """
    if count == 0:
        return torch.zeros(0, 3, size, size, device=device)
    kind = _random.randint(len(SYNTHETIC_KINDS), (count,), generator, device)
    colours = _random.uniform((2, count, 3, 1, 1), generator, device)
    angle = _random.uniform((count, 1, 1), generator, device) * math.pi
    period = 4.0 + _random.uniform((count, 1, 1), generator, device) * (size / 4.0)  # pixels
    coords = torch.arange(size, device=device, dtype=torch.float32)
    x, y = coords[None, None, :], coords[None, :, None]
    u = x * angle.cos() + y * angle.sin()  # (count, S, S) rotated coordinates
    v = -x * angle.sin() + y * angle.cos()
    stripes = (torch.sin(2 * math.pi * u / period) > 0).float()
    checker = ((torch.sin(math.pi * u / period) * torch.sin(math.pi * v / period)) > 0).float()
    warp = _fractal_noise(count, size, generator, device)
    marble = 0.5 + 0.5 * torch.sin(2 * math.pi * (u / period + 2.0 * warp))
    per_channel = torch.stack([_fractal_noise(count, size, generator, device) for _ in range(3)], dim=1)

    weights = torch.stack((stripes, checker, marble), dim=1)[torch.arange(count), (kind - 1).clamp_min(0)]
    two_colour = colours[0] + (colours[1] - colours[0]) * weights[:, None]  # (count, 3, S, S)
    return torch.where((kind == 0)[:, None, None, None], per_channel, two_colour).clamp(0.0, 1.0)
