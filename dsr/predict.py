"""Score new images with a trained DSR and show where: `python -m dsr predict CHECKPOINT IMAGE_OR_FOLDER... --out DIR`.

Writes `scores.csv` (path, image score, and a decision when `--threshold` is given) and, per image, a PNG with the
anomaly map blended over the image (a perceptually uniform colour map; the score in the corner). Loads one of this
project's checkpoints, or the reference's files with `--reference DIR --category C`. Nothing already in `--out` is
overwritten without `--overwrite`. Bad paths, unreadable images and a checkpoint of the wrong kind are one line on
stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from dsr.data.io import is_image_file, read_image

COLOUR_MAP = "inferno"
OVERLAY_ALPHA = 0.55


class PredictError(ValueError):
    """Bad input to `predict`: printed as one line."""


@dataclass(frozen=True)
class Scored:
    path: Path
    score: float
    overlay: Path


def collect_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files named directly or found (recursively, sorted) in folders; PredictError names a bad input."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if is_image_file(p))
            if not files:
                raise PredictError(f"{path}: no image files in this folder")
            found += files
        elif path.is_file():
            if not is_image_file(path):
                raise PredictError(f"{path}: not an image file (by its extension)")
            found.append(path)
        else:
            raise PredictError(f"{path}: no such file or folder")
    return found


def load_model(checkpoint: str | None, reference: str | None, category: str | None, device: torch.device):
    """Our checkpoint, or the reference's files for a category (channel order BGR, as the reference reads)."""
    from dsr.checkpoints import load_checkpoint, load_reference_checkpoints
    from dsr.config import DSRConfig
    from dsr.model import DSR

    try:
        if reference is not None:
            if not category:
                raise PredictError("--reference needs --category (the reference's files are per category)")
            model = load_reference_checkpoints(DSR(DSRConfig(channel_order="bgr")), reference, category)
        else:
            if checkpoint is None or not Path(checkpoint).is_file():
                raise PredictError(f"{checkpoint}: no such checkpoint file")
            model = load_checkpoint(checkpoint)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        if isinstance(error, PredictError):
            raise
        raise PredictError(str(error).splitlines()[0]) from error
    return model.to(device).eval()


def overlay_name(image: Path, index: int) -> str:
    """A unique, readable PNG name for an image's overlay."""
    return f"{index:05d}_{image.stem}.png"


def predict_images(model, images: Sequence[Path], out: Path, batch_size: int = 8, device: torch.device | str = "cpu",
                   progress: bool | None = None) -> list[Scored]:
    """Score `images` in batches and write one overlay PNG each into `out`; returns the scores in input order."""
    config = model.config
    device = torch.device(device)
    results: list[Scored] = []
    if progress is None:
        progress = sys.stderr.isatty()
    with tqdm(total=len(images), desc="scoring", disable=not progress) as bar:
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            tensors = []
            for path in chunk:
                try:
                    tensors.append(read_image(path, config.image_size, config.channel_order, config.antialias)[0])
                except (ValueError, FileNotFoundError, OSError) as error:
                    raise PredictError(str(error).splitlines()[0]) from error
            batch = torch.stack(tensors).to(device)  # (B, 3, S, S)
            with torch.inference_mode():
                prediction = model.predict(batch)
            for i, path in enumerate(chunk):
                target = out / overlay_name(path, start + i)
                rgb = batch[i].flip(0) if config.channel_order == "bgr" else batch[i]
                write_overlay(rgb.cpu(), prediction.pixel_maps[i].float().cpu(),
                              float(prediction.image_scores[i]), target)
                results.append(Scored(path, float(prediction.image_scores[i]), target))
            bar.update(len(chunk))
    return results


def write_overlay(image: torch.Tensor, anomaly_map: torch.Tensor, score: float, path: Path) -> None:
    """The anomaly map (probability, 0..1) in a perceptual colour map blended over the image, score top left."""
    from matplotlib import colormaps
    from PIL import Image, ImageDraw

    rgb = (image.permute(1, 2, 0).numpy() * 255.0).clip(0, 255)  # (S, S, 3)
    coloured = colormaps[COLOUR_MAP](anomaly_map.clamp(0, 1).numpy())[..., :3] * 255.0
    blended = (1 - OVERLAY_ALPHA) * rgb + OVERLAY_ALPHA * coloured
    picture = Image.fromarray(blended.round().astype(np.uint8), mode="RGB")
    scale = max(1, 256 // picture.width)  # small models: enlarge so the score stays legible
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(picture)
    text = f"{score:.3f}"
    box = draw.textbbox((4, 4), text)
    draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=(0, 0, 0))
    draw.text((4, 4), text, fill=(255, 255, 255))
    picture.save(path)


def write_scores(results: Sequence[Scored], path: Path, threshold: float | None) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "image_score", "overlay"] + (["anomalous"] if threshold is not None else []))
        for r in results:
            row = [str(r.path), f"{r.score:.6f}", r.overlay.name]
            writer.writerow(row + ([int(r.score >= threshold)] if threshold is not None else []))


def prepare_out(out: Path, images: Sequence[Path], overwrite: bool) -> None:
    """Create `out`; refuse (PredictError) to overwrite anything already there unless `overwrite`."""
    if out.exists() and not out.is_dir():
        raise PredictError(f"--out {out}: exists and is not a folder")
    targets = [out / "scores.csv"] + [out / overlay_name(p, i) for i, p in enumerate(images)]
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise PredictError(f"--out {out}: {existing[0].name} already exists ({len(existing)} file(s) would be "
                           f"overwritten); pass --overwrite or choose another folder")
    out.mkdir(parents=True, exist_ok=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dsr predict", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", help="a checkpoint saved by dsr (omit with --reference)")
    parser.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER")
    parser.add_argument("--out", required=True, type=Path, help="folder for scores.csv and the overlays")
    parser.add_argument("--reference", metavar="DIR", help="the reference's .pckl files instead of a checkpoint")
    parser.add_argument("--category", help="category of the reference's files (with --reference)")
    parser.add_argument("--threshold", type=float, help="add a decision column: anomalous if score >= threshold")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--overwrite", action="store_true", help="replace files already in --out")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    inputs = list(args.images)
    checkpoint = args.checkpoint
    if args.reference is not None and checkpoint is not None:
        inputs.insert(0, checkpoint)  # with --reference every positional is an image or folder
        checkpoint = None
    try:
        if args.batch_size < 1:
            raise PredictError(f"--batch-size must be >= 1, got {args.batch_size}")
        images = collect_images(inputs)
        prepare_out(args.out, images, args.overwrite)
        model = load_model(checkpoint, args.reference, args.category, torch.device(args.device))
        results = predict_images(model, images, args.out, args.batch_size, args.device)
    except PredictError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    write_scores(results, args.out / "scores.csv", args.threshold)
    print(f"{len(results)} image(s) scored: {args.out / 'scores.csv'}")
    return 0
