"""A small demo dataset in the MVTec AD layout, built offline from texture photographs shipped in scikit-image.

Each category is one photograph (`skimage/data/<name>.png`, read from the installed package, never downloaded).
Normal images are random crops of it (random size, flips, a little brightness jitter) resized to image_size and
tinted per category; defect images are such crops with a defect from `dsr.data.defects` drawn in, with its exact
binary mask. Output:

    <root>/<category>/train/good/000.png ...         normal training images
    <root>/<category>/test/good/000.png ...          normal test images
    <root>/<category>/test/<defect>/000.png ...      defect test images
    <root>/<category>/ground_truth/<defect>/000_mask.png    0/255 masks
    <root>/stage1/0000.png ...                         crops of scikit-image's other photographs (see below)

Stage 1 (the discrete latent model) is trained once on ImageNet in the paper, so that its codebook can express
what the object categories never show: an anomaly is only detectable if the general decoder can reconstruct it.
A codebook learnt from three texture photographs cannot (a white scratch on gravel quantises to gravel), so the
demo also ships `stage1/`: random crops of every other photograph scikit-image bundles (faces, coffee, text,
rockets, cells, ...), the project's offline stand-in for ImageNet.

Two difficulties, each a dataset kind (`dsr.data.kinds.DEMO_KINDS`): "easy" (kind "demo", root `data/demo`), the
defects of `dsr.data.defects`, and "hard" (kind "demo_hard", root `data/demo_hard`), the research benchmark for
feature sampling: the same photographs, tints, seeds and therefore byte-identical normal images and stage-1
photographs (a stage-1 model trained on one fits the other), but subtle defects from `dsr.data.hard_defects`
(low-opacity tints, slight shading, worn texture, displaced or rotated patches, swirls, faint marks) that stay
close to the normal data while remaining resolvable at the small preset's 64 px.

The build is deterministic for a seed and idempotent: a finished build (marker file written last, with the
parameters) is reused; an interrupted or different-parameter build of ours is rebuilt; a folder that is not a
demo build is never touched, and neither is a finished build of the other difficulty. Run
`python -m dsr.data.demo ROOT [--difficulty hard]` to build from the command line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from filelock import FileLock
from PIL import Image

from dsr.data.kinds import DEMO_KINDS
from dsr.data.defects import DEFECTS, Painter, draw_defect
from dsr.data.hard_defects import HARD_DEFECTS

# category -> (photograph in skimage/data, RGB tint, defect types drawn in its test set): the strong defects of
# version 2, then the subtle kinds real inspection meets (thin scratches, low-contrast stains)
DEMO_SOURCES: dict[str, tuple[str, tuple[float, float, float], tuple[str, ...]]] = {
    "brick": ("brick.png", (1.0, 0.78, 0.62), ("crack", "hole", "stain", "thin_scratch", "faint_stain")),
    "grass": ("grass.png", (0.72, 1.0, 0.58), ("scratch", "stain", "crack", "thin_scratch", "faint_stain")),
    "gravel": ("gravel.png", (0.95, 0.93, 0.88), ("hole", "scratch", "stain", "thin_scratch", "faint_stain")),
}
DEMO_CATEGORIES = tuple(DEMO_SOURCES)
STARTED_MARKER = ".dsr_demo_started"  # written first: this folder is a demo build (ours to replace)
COMPLETE_MARKER = ".dsr_demo_complete.json"  # written last, holds the build parameters
DEMO_VERSION = 3  # bump when the builder's output changes, so old builds are rebuilt (3: subtle defects added)
STAGE1_FOLDER = "stage1"  # general-purpose photographs for stage 1 (not a category: no train/good)
STAGE1_COUNT = 1200  # crops in it (build_demo's default)
_STAGE1_CROP_RANGE = (0.15, 0.6)
_CROP_RANGE = (0.55, 0.75)  # crop side as a fraction of the photograph side
_BRIGHTNESS_GAIN = (0.9, 1.1)
_BRIGHTNESS_OFFSET = 0.03
DEFECT_IMAGES_PER_TYPE = 5  # test_defect_count's default: this many images of each defect type

# the hard demo: the easy demo's photographs and tints (so the same normal images), every subtle defect type
HARD_SOURCES: dict[str, tuple[str, tuple[float, float, float], tuple[str, ...]]] = {
    category: (photo, tint, tuple(HARD_DEFECTS)) for category, (photo, tint, _) in DEMO_SOURCES.items()
}
HARD_DEMO_VERSION = 1  # bump when the hard builder's output changes


@dataclass(frozen=True)
class Difficulty:
    """What a demo difficulty draws: per category (photograph, tint, defect types), their painters, a version."""

    sources: dict[str, tuple[str, tuple[float, float, float], tuple[str, ...]]]
    painters: Mapping[str, Painter]
    version: int


DIFFICULTIES: dict[str, Difficulty] = {
    "easy": Difficulty(DEMO_SOURCES, DEFECTS, DEMO_VERSION),
    "hard": Difficulty(HARD_SOURCES, HARD_DEFECTS, HARD_DEMO_VERSION),
}


def photo_path(name: str) -> Path:
    """The path of a photograph shipped inside the installed scikit-image (no download)."""
    import skimage.data

    path = Path(skimage.data.__file__).parent / name
    if not path.is_file():
        raise FileNotFoundError(f"scikit-image does not ship {path}; the demo needs its bundled texture photos")
    return path


def _load_photo(name: str) -> Image.Image:
    with Image.open(photo_path(name)) as im:
        return im.convert("L")


def _normal_image(photo: Image.Image, tint: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random crop (size, flips, brightness) of the photograph as (S, S, 3) float in [0, 1]."""
    side = int(min(photo.size) * rng.uniform(*_CROP_RANGE))
    left = int(rng.integers(0, photo.size[0] - side + 1))
    top = int(rng.integers(0, photo.size[1] - side + 1))
    crop = photo.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR)
    gray = np.asarray(crop, dtype=np.float32) / 255.0  # (S, S)
    if rng.random() < 0.5:
        gray = gray[:, ::-1]
    if rng.random() < 0.5:
        gray = gray[::-1, :]
    gray = gray * rng.uniform(*_BRIGHTNESS_GAIN) + rng.uniform(-_BRIGHTNESS_OFFSET, _BRIGHTNESS_OFFSET)
    return np.clip(gray[..., None] * tint, 0.0, 1.0)  # (S, S, 3)


def _save_rgb(image: np.ndarray, path: Path) -> None:
    Image.fromarray(np.round(image * 255.0).astype(np.uint8), mode="RGB").save(path)


def stage1_photos() -> list[Path]:
    """scikit-image's bundled RGB/grey photographs of at least 128 px, except the demo's own textures."""
    import skimage.data

    textures = {name for level in DIFFICULTIES.values() for name, _, _ in level.sources.values()}
    found = []
    for path in sorted(Path(skimage.data.__file__).parent.iterdir()):
        if path.suffix not in (".png", ".jpg") or path.name in textures:
            continue
        try:
            with Image.open(path) as im:
                if min(im.size) >= 128:
                    found.append(path)
        except OSError:
            continue
    return found


def _build_stage1(folder: Path, size: int, count: int, seed: int) -> None:
    """`count` random square crops (15-60% of the side, random flip) of the stage-1 photographs, resized."""
    photos = []
    for path in stage1_photos():
        with Image.open(path) as im:
            photos.append(im.convert("RGB"))
    if not photos:
        raise FileNotFoundError("scikit-image ships no photographs for the demo's stage-1 set")
    rng = np.random.default_rng([seed, zlib.crc32(STAGE1_FOLDER.encode())])
    folder.mkdir(parents=True)
    for i in range(count):
        photo = photos[i % len(photos)]
        side = int(min(photo.size) * rng.uniform(*_STAGE1_CROP_RANGE))
        left = int(rng.integers(0, photo.size[0] - side + 1))
        top = int(rng.integers(0, photo.size[1] - side + 1))
        crop = photo.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        crop.save(folder / f"{i:04d}.png")


def demo_stage1_folder(root: Path | str) -> Path | None:
    """The demo's stage-1 photographs folder, or None if `root` is not a demo build that has one."""
    folder = Path(root) / STAGE1_FOLDER
    return folder if (Path(root) / COMPLETE_MARKER).is_file() and folder.is_dir() else None


def _split_counts(total: int, parts: int) -> list[int]:
    return [total // parts + (i < total % parts) for i in range(parts)]


def _build_category(folder: Path, category: str, size: int, train_count: int, test_good_count: int,
                    test_defect_count: int, seed: int, difficulty: str = "easy") -> None:
    level = DIFFICULTIES[difficulty]
    photo_name, tint, defects = level.sources[category]
    photo = _load_photo(photo_name)
    tint_array = np.array(tint, dtype=np.float32)
    rng = np.random.default_rng([seed, zlib.crc32(category.encode())])  # independent of the other categories

    def write_normals(subfolder: Path, count: int) -> None:
        subfolder.mkdir(parents=True)
        for i in range(count):
            _save_rgb(_normal_image(photo, tint_array, size, rng), subfolder / f"{i:03d}.png")

    write_normals(folder / "train" / "good", train_count)
    if test_good_count:
        write_normals(folder / "test" / "good", test_good_count)
    for defect, count in zip(defects, _split_counts(test_defect_count, len(defects))):
        if count == 0:
            continue
        images, masks = folder / "test" / defect, folder / "ground_truth" / defect
        images.mkdir(parents=True)
        masks.mkdir(parents=True)
        for i in range(count):
            image, mask = draw_defect(defect, _normal_image(photo, tint_array, size, rng), rng, level.painters)
            _save_rgb(image, images / f"{i:03d}.png")
            Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(masks / f"{i:03d}_mask.png")


def _check_params(categories: Sequence[str], image_size: int, train_count: int, test_good_count: int,
                  test_defect_count: int | None, seed: int, difficulty: str = "easy") -> dict:
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {', '.join(DIFFICULTIES)}, got {difficulty!r}")
    sources = DIFFICULTIES[difficulty].sources
    categories = list(categories)
    unknown = [c for c in categories if c not in sources]
    if not categories or unknown or len(set(categories)) != len(categories):
        raise ValueError(f"categories must be distinct names from {tuple(sources)}, got {categories}")
    if test_defect_count is None:
        test_defect_count = DEFECT_IMAGES_PER_TYPE * max(len(sources[c][2]) for c in categories)
    checks = {"image_size": (image_size, 16), "train_count": (train_count, 1), "test_good_count": (test_good_count, 0),
              "test_defect_count": (test_defect_count, 0), "seed": (seed, 0)}
    for name, (value, minimum) in checks.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if test_good_count + test_defect_count == 0:
        raise ValueError("test_good_count and test_defect_count are both 0: the test split would be empty")
    level = {"version": DEMO_VERSION} if difficulty == "easy" else {  # the easy marker as before this key existed
        "version": DIFFICULTIES[difficulty].version, "difficulty": difficulty}
    return {**level, "categories": categories, "image_size": image_size, "train_count": train_count,
            "test_good_count": test_good_count, "test_defect_count": test_defect_count, "seed": seed}


def read_demo_params(root: Path | str) -> dict | None:
    """The parameters of the finished demo build in `root`, or None if there is none."""
    marker = Path(root) / COMPLETE_MARKER
    try:
        return json.loads(marker.read_text())
    except (OSError, ValueError):
        return None


def params_difficulty(params: Mapping) -> str:
    """The difficulty of a build from its parameters (builds from before difficulties existed are easy)."""
    return str(params.get("difficulty", "easy"))


def demo_kind(root: Path | str) -> str | None:
    """The dataset kind ("demo", "demo_hard") of the finished demo build in `root`, or None if there is none."""
    params = read_demo_params(root)
    if params is None:
        return None
    kinds = [kind for kind, difficulty in DEMO_KINDS.items() if difficulty == params_difficulty(params)]
    return kinds[0] if kinds else None


def _check_replaceable(root: Path, difficulty: str) -> None:
    """Refuse to replace a non-empty folder that is not one of our demo builds (it may be someone's data)."""
    if root.exists() and not root.is_dir():
        raise ValueError(f"demo root {root} exists and is not a folder")
    if root.is_dir() and any(root.iterdir()) and not (root / STARTED_MARKER).exists():
        raise ValueError(f"demo root {root} is a non-empty folder that is not a demo build; "
                         f"choose an empty or new folder")
    existing = read_demo_params(root)
    if existing is not None and params_difficulty(existing) != difficulty:
        raise ValueError(f"demo root {root} holds the {params_difficulty(existing)} demo (dataset kind "
                         f"{demo_kind(root)!r}); build the {difficulty} one into another folder")


def build_demo(
    root: Path | str,
    categories: Sequence[str] = DEMO_CATEGORIES,
    image_size: int = 128,
    train_count: int = 60,
    test_good_count: int = 20,
    test_defect_count: int | None = None,  # DEFECT_IMAGES_PER_TYPE of each defect type
    seed: int = 0,
    stage1_count: int = STAGE1_COUNT,
    difficulty: str = "easy",
) -> Path:
    """Build (or reuse) the demo dataset in `root` and return `root`.

    Safe to call from parallel processes (a file lock beside `root`); the folder is built in a sibling temporary
    folder and renamed into place, so readers never see a half-written build. `difficulty` is "easy" (dataset
    kind "demo") or "hard" ("demo_hard"): same normal images, subtle defects. Raises ValueError on bad parameters,
    when `root` is a non-empty folder that is not a demo build, or when it holds the other difficulty's build.
    """
    root = Path(root)
    params = _check_params(categories, image_size, train_count, test_good_count, test_defect_count, seed,
                           difficulty)
    if not isinstance(stage1_count, int) or isinstance(stage1_count, bool) or stage1_count < 0:
        raise ValueError(f"stage1_count must be an integer >= 0, got {stage1_count!r}")
    params["stage1_count"] = stage1_count
    if read_demo_params(root) == params:
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root.parent / f".{root.name}.lock")):
        if read_demo_params(root) == params:  # another process finished it while we waited
            return root
        _check_replaceable(root, difficulty)
        building = root.parent / f".{root.name}.building"
        old = root.parent / f".{root.name}.old"
        for leftover in (building, old):  # from an interrupted build
            if leftover.exists():
                shutil.rmtree(leftover)
        building.mkdir()
        (building / STARTED_MARKER).write_text("")
        for category in params["categories"]:
            _build_category(building / category, category, image_size, train_count, test_good_count,
                            params["test_defect_count"], seed, difficulty)
        if stage1_count:
            _build_stage1(building / STAGE1_FOLDER, image_size, stage1_count, seed)
        (building / COMPLETE_MARKER).write_text(json.dumps(params, indent=1))
        if root.exists():
            root.rename(old)
            building.rename(root)
            shutil.rmtree(old)
        else:
            building.rename(root)
    return root


def build_demo_kind(kind: str, root: Path | str) -> Path:
    """Build (or reuse) the default build of the demo dataset kind `kind` ("demo", "demo_hard") in `root`: what a
    study uses, on the driver and on every node that lacks it. ValueError for a kind that is not a demo."""
    if kind not in DEMO_KINDS:
        raise ValueError(f"dataset kind {kind!r} is not a demo; demo kinds: {', '.join(DEMO_KINDS)}")
    return build_demo(root, difficulty=DEMO_KINDS[kind])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the demo anomaly-detection dataset (MVTec layout).")
    parser.add_argument("root", type=Path)
    parser.add_argument("--categories", nargs="+", default=list(DEMO_CATEGORIES), choices=DEMO_CATEGORIES)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--train-count", type=int, default=60)
    parser.add_argument("--test-good-count", type=int, default=20)
    parser.add_argument("--test-defect-count", type=int, default=None,
                        help=f"defect test images per category (default {DEFECT_IMAGES_PER_TYPE} per defect type)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stage1-count", type=int, default=STAGE1_COUNT, help="general photographs for stage 1")
    parser.add_argument("--difficulty", default="easy", choices=tuple(DIFFICULTIES),
                        help="easy (dataset kind demo) or hard (demo_hard: subtle defects, same normal images)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    root = build_demo(args.root, args.categories, args.image_size, args.train_count, args.test_good_count,
                      args.test_defect_count, args.seed, args.stage1_count, args.difficulty)
    print(f"{args.difficulty} demo dataset ready in {root} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
