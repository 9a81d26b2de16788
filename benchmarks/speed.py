"""Inference speed benchmark: images/s of `DSR.predict` per mode and batch size, side by side in one run.

Each (mode, batch) runs in its own subprocess so that its peak resident memory is its own; the maps of every
mode are compared with plain fp32 eager on the same weights and images.

    python benchmarks/speed.py                        # paper config, batch 1 and 8, all modes
    python benchmarks/speed.py --preset small --batches 1 4 --modes fp32 bf16
    python benchmarks/speed.py --checkpoint run/model.pt   # trained weights (errors of bf16 are more telling)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

# mode -> (channels_last, precision, torch.compile, one image per forward pass); "fp32" is the plain baseline:
# fp32 eager, the whole batch in one pass
MODES: dict[str, tuple[bool, str, bool, bool]] = {
    "fp32": (False, "fp32", False, False),
    "fp32-per-image": (False, "fp32", False, True),
    "fp32-channels-last": (True, "fp32", False, False),
    "fp32-compile": (False, "fp32", True, False),
    "bf16": (False, "bf16", False, False),
    "bf16-per-image": (False, "bf16", False, True),
    "bf16-channels-last-per-image": (True, "bf16", False, True),
}
DEFAULT_MODES = ["fp32", "fp32-per-image", "bf16-per-image", "bf16-channels-last-per-image"]


def build_model(preset_name: str, checkpoint: str | None, seed: int = 0):
    from dsr import DSR, preset
    from dsr.checkpoints import load_checkpoint

    if checkpoint:
        return load_checkpoint(checkpoint).eval()
    torch.manual_seed(seed)
    return DSR(preset(preset_name)).eval()


def run_worker(mode: str, batch: int, preset_name: str, checkpoint: str | None, iterations: int,
               maps_path: str) -> dict[str, float]:
    """Time `predict` in one mode; save the maps of the first batch for the side-by-side comparison."""
    channels_last, precision, compile_model, per_image = MODES[mode]
    chunk = 1 if per_image else batch
    model = build_model(preset_name, checkpoint)
    size = model.config.image_size
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    def predict(x, precision):
        return model.predict(x, precision=precision, chunk_size=chunk)

    if compile_model:
        model.forward = torch.compile(model.forward)
    compile_start = time.perf_counter()
    first = predict(images, precision=precision)  # warm-up (and compilation)
    warmup = time.perf_counter() - compile_start
    start = time.perf_counter()
    for _ in range(iterations):
        predict(images, precision=precision)
    elapsed = time.perf_counter() - start
    torch.save({"maps": first.pixel_maps, "scores": first.image_scores}, maps_path)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"images_per_s": batch * iterations / elapsed, "warmup_s": warmup, "peak_rss_gib": peak_kib / 2**20}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--checkpoint", default=None, help="a dsr-studies checkpoint (trained weights)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--modes", nargs="+", default=DEFAULT_MODES, choices=list(MODES))
    parser.add_argument("--iterations", type=int, default=3, help="timed predict calls per (mode, batch)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--worker", nargs=3, metavar=("MODE", "BATCH", "MAPS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        mode, batch, maps_path = args.worker
        print(json.dumps(run_worker(mode, int(batch), args.preset, args.checkpoint, args.iterations, maps_path)))
        return 0

    if "fp32" not in args.modes:
        args.modes = ["fp32", *args.modes]
    weights = f"weights from {args.checkpoint}" if args.checkpoint else f"preset {args.preset}, random weights (seed 0)"
    print(f"device cpu, torch {torch.__version__}, {torch.get_num_threads()} threads, {weights}")
    header = f"{'mode':<20}{'batch':>6}{'images/s':>10}{'x fp32':>8}{'peak GiB':>10}{'max|map diff|':>15}{'max|score diff|':>17}"
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        for batch in args.batches:
            baseline: dict[str, object] = {}
            for mode in args.modes:
                maps_path = os.path.join(tmp, f"{mode}-{batch}.pt")
                command = [sys.executable, __file__, "--preset", args.preset, "--iterations", str(args.iterations),
                           "--worker", mode, str(batch), maps_path]
                if args.checkpoint:
                    command += ["--checkpoint", args.checkpoint]
                if args.threads:
                    command += ["--threads", str(args.threads)]
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode != 0:
                    print(f"{mode:<20}{batch:>6}  failed: {done.stderr.strip().splitlines()[-1]}")
                    continue
                result = json.loads(done.stdout.strip().splitlines()[-1])
                outputs = torch.load(maps_path, weights_only=True)
                if mode == "fp32":
                    baseline = {"ips": result["images_per_s"], **outputs}
                map_diff = (outputs["maps"] - baseline["maps"]).abs().max().item()
                score_diff = (outputs["scores"] - baseline["scores"]).abs().max().item()
                print(f"{mode:<20}{batch:>6}{result['images_per_s']:>10.3f}"
                      f"{result['images_per_s'] / baseline['ips']:>8.2f}{result['peak_rss_gib']:>10.2f}"
                      f"{map_diff:>15.2e}{score_diff:>17.2e}", flush=True)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
