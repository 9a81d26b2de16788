"""Subtle surface defects for the hard demo (`build_demo(..., difficulty="hard")`, dataset kind "demo_hard").

Where the easy demo's defects paint something foreign into the texture (a coloured stain, a dark hole, a bright
scratch), these stay close to the normal data: the texture itself, changed a little. Each keeps the surface's own
structure and changes one property of it inside a region:

- `tint`: a low-opacity colour shift (per-channel gains orthogonal to luminance), the texture unchanged;
- `shade`: a slightly darker or lighter patch (brightness x 0.84-0.90 or 1.10-1.16);
- `worn`: local contrast reduced to 30-50% around the local mean (a polished or worn spot);
- `displaced`: a patch of the texture replaced by the texture a few pixels away (repeated, misaligned structure);
- `rotated`: a patch copied from elsewhere in the image, rotated by 25-155 degrees;
- `warp`: a smooth swirl that moves texture by up to 1.5-2 px at 64 px (3-4.5 px at the demo's 128 px);
- `faint_mark`: a gently curved band >= 2.6 px wide at 64 px, 12-20% darker or lighter than the surface.

All are sized for the small preset's 64 px: regions of radius >= 5 px at 64, marks >= 2.6 px wide, displacements
>= 1.5 px (docs/learning.md: 1.5 px scratches on gravel are below what its stage 1 reconstructs). Every painter
changes nothing where its coverage is 0, so pixels a few pixels away from the mask are exactly the normal image.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from dsr.data.defects import SUPERSAMPLE, Painter, _blob_coverage, _canvas, _coverage, register

HARD_DEFECTS: dict[str, Painter] = {}
_LUMINANCE = np.array([0.299, 0.587, 0.114])


def _mix(image: np.ndarray, changed: np.ndarray, coverage: np.ndarray) -> np.ndarray:
    """`changed` where the defect covers the pixel, `image` elsewhere, blended by coverage; clipped to [0, 1]."""
    alpha = coverage[..., None]  # (S, S, 1)
    return np.clip(image * (1.0 - alpha) + changed * alpha, 0.0, 1.0)


def _ellipse_coverage(rng: np.random.Generator, size: int, radius: tuple[float, float],
                      centre: tuple[float, float] = (0.3, 0.7)) -> tuple[np.ndarray, np.ndarray]:
    """An anti-aliased (sharp-edged) ellipse with radii in `radius` x size; returns (coverage, centre in px)."""
    canvas, draw = _canvas(size)
    c = rng.uniform(*centre, size=2) * size
    rx, ry = rng.uniform(*radius, size=2) * size
    s = SUPERSAMPLE
    draw.ellipse([(c[0] - rx) * s, (c[1] - ry) * s, (c[0] + rx) * s, (c[1] + ry) * s], fill=255)
    return _coverage(canvas, size), c


def _sample(image: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The image at fractional (rows, cols), per channel, cubic spline, mirrored at the border; (S, S, 3)."""
    return np.stack([ndimage.map_coordinates(image[..., ch], [rows, cols], order=3, mode="mirror")
                     for ch in range(image.shape[2])], axis=-1).astype(np.float32)


@register("tint", registry=HARD_DEFECTS)
def tint(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A low-opacity discolouration: per-channel gains 1 +- 0.10-0.16 in a direction that keeps luminance."""
    size = image.shape[0]
    coverage = _blob_coverage(rng, size, radius=(0.07, 0.11))
    direction = rng.normal(size=3)
    direction -= _LUMINANCE * (direction @ _LUMINANCE) / (_LUMINANCE @ _LUMINANCE)  # no luminance change
    direction /= np.abs(direction).max()
    gains = (1.0 + rng.uniform(0.10, 0.16) * direction).astype(np.float32)
    return _mix(image, image * gains, coverage), coverage


@register("shade", registry=HARD_DEFECTS)
def shade(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A slightly darker or lighter soft patch (brightness x 0.84-0.90 or 1.10-1.16), texture kept."""
    size = image.shape[0]
    coverage = _blob_coverage(rng, size, radius=(0.07, 0.11))
    gain = 1.0 + rng.choice([-1.0, 1.0]) * rng.uniform(0.10, 0.16)
    return _mix(image, image * np.float32(gain), coverage), coverage


@register("worn", registry=HARD_DEFECTS)
def worn(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A worn, flattened spot: the texture's deviation from its local mean scaled to 30-50%."""
    size = image.shape[0]
    coverage = _blob_coverage(rng, size, radius=(0.08, 0.12))
    local_mean = ndimage.gaussian_filter(image, sigma=(0.03 * size, 0.03 * size, 0), mode="mirror")
    flattened = local_mean + (image - local_mean) * rng.uniform(0.3, 0.5)
    return _mix(image, flattened.astype(np.float32), coverage), coverage


@register("displaced", registry=HARD_DEFECTS)
def displaced(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A patch replaced by the texture 5-9% of the side away (whole pixels: an exact, misaligned repeat)."""
    size = image.shape[0]
    coverage, _ = _ellipse_coverage(rng, size, radius=(0.08, 0.12))
    angle = rng.uniform(0, 2 * np.pi)
    distance = max(rng.uniform(0.05, 0.09) * size, 2.0)
    dy, dx = int(round(distance * np.sin(angle))), int(round(distance * np.cos(angle)))
    rows = np.clip(np.arange(size) + dy, 0, size - 1)
    cols = np.clip(np.arange(size) + dx, 0, size - 1)
    return _mix(image, image[rows][:, cols], coverage), coverage


@register("rotated", registry=HARD_DEFECTS)
def rotated(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A patch of the texture copied from elsewhere in the image and rotated by 25-155 degrees either way."""
    size = image.shape[0]
    coverage, centre = _ellipse_coverage(rng, size, radius=(0.08, 0.12))
    source = rng.uniform(0.25, 0.75, size=2) * size
    theta = rng.choice([-1.0, 1.0]) * np.deg2rad(rng.uniform(25, 155))
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    dx, dy = x - centre[0], y - centre[1]
    cols = source[0] + np.cos(theta) * dx - np.sin(theta) * dy - 0.5
    rows = source[1] + np.sin(theta) * dx + np.cos(theta) * dy - 0.5
    return _mix(image, _sample(image, rows, cols), coverage), coverage


@register("warp", registry=HARD_DEFECTS)
def warp(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A smooth swirl of radius 9-13% of the side moving texture by at most 2.4-3.5% of the side (zero at its
    centre and rim); the mask is the disc it moves."""
    size = image.shape[0]
    centre = rng.uniform(0.3, 0.7, size=2) * size
    radius = rng.uniform(0.09, 0.13) * size
    peak = rng.uniform(0.024, 0.035) * size * rng.choice([-1.0, 1.0])
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    dx, dy = x - centre[0], y - centre[1]
    r = np.hypot(dx, dy) / radius
    # tangential displacement r (1 - r^2)^2, normalised to 1 at its maximum (r = 1/sqrt(5)); 0 outside the disc
    profile = np.where(r < 1.0, r * (1.0 - r**2) ** 2, 0.0) / (5**-0.5 * 0.8**2)
    shift = peak * profile / np.maximum(r * radius, 1e-9)  # per unit of (dx, dy): a rotation about the centre
    moved = _sample(image, y - 0.5 + shift * dx, x - 0.5 - shift * dy)
    canvas, draw = _canvas(size)
    s = SUPERSAMPLE
    draw.ellipse([(centre[0] - radius) * s, (centre[1] - radius) * s, (centre[0] + radius) * s,
                  (centre[1] + radius) * s], fill=255)
    coverage = _coverage(canvas, size)
    inside = (r < 1.0).astype(np.float32)  # where the swirl moves anything: outside it the image stays exact
    return np.clip(image * (1.0 - inside[..., None]) + moved * inside[..., None], 0.0, 1.0), coverage


@register("faint_mark", min_area=0.01, registry=HARD_DEFECTS)
def faint_mark(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A gently curved band 4.2-5.2% of the side wide (>= 2.6 px at 64), the surface 12-20% darker or lighter."""
    size = image.shape[0]
    canvas, draw = _canvas(size)
    while True:
        start, end = rng.uniform(0.15, 0.85, size=(2, 2))
        if np.hypot(*(end - start)) >= 0.4:
            break
    normal = np.array([start[1] - end[1], end[0] - start[0]]) / np.hypot(*(end - start))
    control = (start + end) / 2 + normal * rng.uniform(-0.1, 0.1)
    t = np.linspace(0.0, 1.0, 24)[:, None]
    points = ((1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end) * size * SUPERSAMPLE
    width = rng.uniform(0.042, 0.052) * size * SUPERSAMPLE
    draw.line([tuple(p) for p in points], fill=255, width=int(round(width)), joint="curve")
    coverage = _coverage(canvas, size)
    gain = 1.0 + rng.choice([-1.0, 1.0]) * rng.uniform(0.12, 0.2)
    return _mix(image, image * np.float32(gain), coverage), coverage


__all__ = ["HARD_DEFECTS"]
