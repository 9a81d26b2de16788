"""Synthetic surface defects for the demo dataset, each drawn with its exact mask.

A defect is drawn as a coverage map: the shape is rasterised at SUPERSAMPLE x resolution and box-averaged down,
so edges are anti-aliased and coverage[i, j] is the fraction of pixel (i, j) the defect covers. The defect is
alpha-blended into the image with that coverage; its mask is `coverage >= 0.5` (the pixels at least half
covered). Sizes are fractions of the image side so they scale with image_size.

Two families: strong defects (cracks >= 3 px at 64, holes, stains of a distinct hue, bright scratches) and the
kind real inspection mostly meets, thin scratches (about 1.5 px at 64) and low-contrast stains (the surface's own
colour, a little darker or lighter and shifted in hue), which a detector that only learnt gross changes misses.
"""

from __future__ import annotations

import colorsys
from typing import Callable, Mapping

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SUPERSAMPLE = 4
MIN_AREA_FRACTION = 0.02  # a drawn defect smaller than this is redrawn (typical sizes are 3-8% of the image)
_MAX_TRIES = 50

Painter = Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]
DEFECTS: dict[str, Painter] = {}
MIN_AREA: dict[str, float] = {}  # per defect: the smallest mask fraction accepted (thin defects cover less)


def register(name: str, min_area: float = MIN_AREA_FRACTION,
             registry: dict[str, Painter] | None = None) -> Callable[[Painter], Painter]:
    """Add a painter to `registry` (DEFECTS unless given: the easy demo's) under a name unique across registries."""
    def add(painter: Painter) -> Painter:
        if name in MIN_AREA:
            raise ValueError(f"defect {name!r} is registered twice")
        (DEFECTS if registry is None else registry)[name] = painter
        MIN_AREA[name] = min_area
        return painter
    return add


def _canvas(size: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    canvas = Image.new("L", (size * SUPERSAMPLE, size * SUPERSAMPLE), 0)
    return canvas, ImageDraw.Draw(canvas)


def _coverage(canvas: Image.Image, size: int, blur: float = 0.0) -> np.ndarray:
    if blur > 0:
        canvas = canvas.filter(ImageFilter.GaussianBlur(blur * SUPERSAMPLE))
    return np.asarray(canvas.resize((size, size), Image.BOX), dtype=np.float32) / 255.0  # (S, S) in [0, 1]


def _blend(image: np.ndarray, coverage: np.ndarray, colour: np.ndarray, opacity: float) -> np.ndarray:
    alpha = (coverage * opacity)[..., None]  # (S, S, 1)
    return np.clip(image * (1.0 - alpha) + colour * alpha, 0.0, 1.0)


def _polyline(rng: np.random.Generator, size: int, segments: int, length: float, turn: float) -> list[tuple]:
    """Points (in supersampled pixels) of a path with `segments` steps of total `length` (image fractions)."""
    point = rng.uniform(0.25, 0.75, size=2)
    angle = rng.uniform(0, 2 * np.pi)
    step = length / segments
    points = [tuple(point * size * SUPERSAMPLE)]
    for _ in range(segments):
        angle += rng.normal(0.0, turn)
        point = point + step * np.array([np.cos(angle), np.sin(angle)])
        if not (0.02 < point[0] < 0.98 and 0.02 < point[1] < 0.98):  # turn back at the border
            angle += np.pi
            point = np.clip(point, 0.02, 0.98)
        points.append(tuple(point * size * SUPERSAMPLE))
    return points


@register("scratch")
def scratch(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A bright, slightly curved stroke, like a scratch through the surface coating."""
    size = image.shape[0]
    canvas, draw = _canvas(size)
    width = rng.uniform(0.04, 0.055) * size * SUPERSAMPLE
    points = _polyline(rng, size, segments=int(rng.integers(2, 4)), length=rng.uniform(0.65, 0.95), turn=0.3)
    draw.line(points, fill=255, width=int(round(width)), joint="curve")
    coverage = _coverage(canvas, size)
    colour = np.full(3, rng.uniform(0.85, 1.0), dtype=np.float32)
    return _blend(image, coverage, colour, opacity=rng.uniform(0.8, 0.95)), coverage


@register("crack")
def crack(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A dark random-walk line with one branch, like a crack."""
    size = image.shape[0]
    canvas, draw = _canvas(size)
    width = int(round(rng.uniform(0.045, 0.06) * size * SUPERSAMPLE))  # >= 3 px at 64: visible at the small preset
    main = _polyline(rng, size, segments=int(rng.integers(25, 40)), length=rng.uniform(0.8, 1.1), turn=0.35)
    draw.line(main, fill=255, width=width, joint="curve")
    start = main[int(rng.integers(len(main) // 4, 3 * len(main) // 4))]
    branch_rng = np.random.default_rng(rng.integers(2**32))
    branch = _polyline(branch_rng, size, segments=12, length=rng.uniform(0.25, 0.4), turn=0.35)
    offset = np.array(start) - np.array(branch[0])
    draw.line([tuple(np.array(p) + offset) for p in branch], fill=255, width=max(1, int(width * 0.7)),
              joint="curve")
    coverage = _coverage(canvas, size)
    colour = np.full(3, rng.uniform(0.0, 0.08), dtype=np.float32)
    return _blend(image, coverage, colour, opacity=rng.uniform(0.85, 0.95)), coverage


def _blob_coverage(rng: np.random.Generator, size: int, radius: tuple[float, float]) -> np.ndarray:
    """A soft-edged blob (3-5 overlapping ellipses around a random centre, radii in `radius` x size): the shape
    of every stain."""
    canvas, draw = _canvas(size)
    centre = rng.uniform(0.25, 0.75, size=2)
    for _ in range(int(rng.integers(3, 6))):
        c = (centre + rng.normal(0.0, 0.05, size=2)) * size * SUPERSAMPLE
        rx, ry = rng.uniform(*radius, size=2) * size * SUPERSAMPLE
        draw.ellipse([c[0] - rx, c[1] - ry, c[0] + rx, c[1] + ry], fill=255)
    return _coverage(canvas, size, blur=0.6)


@register("stain")
def stain(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A translucent coloured blob (a cluster of overlapping ellipses with soft edges)."""
    size = image.shape[0]
    coverage = _blob_coverage(rng, size, radius=(0.05, 0.1))
    # a hue at least a quarter turn from the surface's own, so the stain is visible (not green on green grass)
    surface_hue = colorsys.rgb_to_hsv(*image.reshape(-1, 3).mean(0))[0]
    hue = (surface_hue + rng.uniform(0.25, 0.75)) % 1.0
    colour = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.7, 1.0), rng.uniform(0.6, 1.0)), dtype=np.float32)
    return _blend(image, coverage, colour, opacity=rng.uniform(0.55, 0.8)), coverage


@register("hole")
def hole(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A dark, irregular pit in which the texture is barely visible."""
    size = image.shape[0]
    canvas, draw = _canvas(size)
    centre = rng.uniform(0.2, 0.8, size=2) * size * SUPERSAMPLE
    radius = rng.uniform(0.09, 0.14) * size * SUPERSAMPLE
    angles = np.sort(rng.uniform(0, 2 * np.pi, size=14))
    radii = radius * rng.uniform(0.75, 1.2, size=angles.size)
    draw.polygon([(centre[0] + r * np.cos(a), centre[1] + r * np.sin(a)) for a, r in zip(angles, radii)],
                 fill=255)
    coverage = _coverage(canvas, size)
    darkened = image * rng.uniform(0.15, 0.3) + rng.uniform(0.0, 0.04)
    alpha = coverage[..., None]
    return np.clip(image * (1.0 - alpha) + darkened * alpha, 0.0, 1.0), coverage


@register("thin_scratch", min_area=0.006)
def thin_scratch(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A long, thin, slightly curved stroke a little lighter than the surface (a hairline scratch)."""
    size = image.shape[0]
    canvas, draw = _canvas(size)
    width = max(rng.uniform(0.022, 0.03) * size, 1.5) * SUPERSAMPLE  # 1.4-1.9 px at 64 (built at 128: 2.8-3.8)
    points = _polyline(rng, size, segments=int(rng.integers(2, 4)), length=rng.uniform(0.6, 0.9), turn=0.25)
    draw.line(points, fill=255, width=int(round(width)), joint="curve")
    coverage = _coverage(canvas, size)
    colour = np.clip(image.reshape(-1, 3).mean(0) + rng.uniform(0.3, 0.45), 0.0, 1.0).astype(np.float32)
    return _blend(image, coverage, colour, opacity=rng.uniform(0.6, 0.8)), coverage


@register("faint_stain")
def faint_stain(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A low-contrast discolouration: the surface's own colour, shifted in hue and darker, translucent."""
    size = image.shape[0]
    coverage = _blob_coverage(rng, size, radius=(0.06, 0.11))
    h, s, v = colorsys.rgb_to_hsv(*image.reshape(-1, 3).mean(0))
    hue = (h + rng.choice([-1.0, 1.0]) * rng.uniform(0.06, 0.12)) % 1.0
    colour = np.array(colorsys.hsv_to_rgb(hue, min(1.0, s + 0.25), v * rng.uniform(0.55, 0.7)), dtype=np.float32)
    return _blend(image, coverage, colour, opacity=rng.uniform(0.4, 0.55)), coverage


def draw_defect(name: str, image: np.ndarray, rng: np.random.Generator,
                registry: Mapping[str, Painter] = DEFECTS) -> tuple[np.ndarray, np.ndarray]:
    """Apply the named defect of `registry` (the easy demo's DEFECTS unless given; the hard demo's are
    `dsr.data.hard_defects.HARD_DEFECTS`) to an image (S, S, 3) float in [0, 1]; returns (image, mask (S, S) bool).

    A draw whose mask covers less than the defect's MIN_AREA (MIN_AREA_FRACTION unless registered smaller) of
    the image is retried with the same generator.
    """
    if name not in registry:
        raise ValueError(f"unknown defect {name!r}; known defects: {', '.join(registry)}")
    for _ in range(_MAX_TRIES):
        painted, coverage = registry[name](image, rng)
        mask = coverage >= 0.5
        if mask.mean() >= MIN_AREA[name]:
            return painted.astype(np.float32), mask
    raise AssertionError(f"defect {name!r} stayed below {MIN_AREA[name]} of the image in {_MAX_TRIES} tries")
