"""GPU readiness benchmark: inference and training throughput, peak memory, and fp32 agreement with the CPU.

On a CUDA device (default there: paper preset, 256x256, inference batches 1 and 32, fp32 and bf16):
  - inference images/s per precision and batch, with bf16/fp32 ratios measured side by side (paper: 58 images/s);
  - one stage-2 and one stage-3 training step (forward, backward, Adam): images/s and peak memory
    (torch.cuda.max_memory_allocated, reset per measurement);
  - the maps' and scores' max abs difference between the device in fp32 (TF32 off) and the CPU, same weights and
    inputs.
On a CPU (or with --small) the same measurements, smaller: tiny preset, 64x64, batches 1 and 4, few repeats; peak
memory is the peak resident set of a fresh process per training measurement (a CPU proxy, not GPU memory), and
the output says so.

    python benchmarks/gpu.py                   # on a GPU machine: under 5 minutes on one GPU
    python benchmarks/gpu.py --small           # the CI-sized run (CPU)
    python benchmarks/gpu.py --preset small --size 64 --train-batch 8    # peak memory of another preset
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from typing import Any

import torch

from dsr import DSR, preset
from dsr.anomalies import make_strategy
from dsr.training.steps import TrainingData, stage2_step, stage3_step, trained_modules

PAPER_IMAGES_PER_S = 58.0  # the paper's reported inference speed (256x256)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so wall-clock times measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(preset_name: str, size: int, seed: int = 0, **overrides: Any) -> DSR:
    """A seeded model of the preset at `size` (weights are random: speed and agreement do not need training)."""
    torch.manual_seed(seed)
    return DSR(preset(preset_name, image_size=size, **overrides)).eval()


def inference_rate(model: DSR, device: torch.device, batch: int, precision: str, repeats: int) -> float:
    """Images/s of DSR.predict on random (batch,3,S,S) images, one forward per batch, after one warm-up call."""
    size = model.config.image_size
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    model.predict(images, precision=precision, chunk_size=batch)
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        model.predict(images, precision=precision, chunk_size=batch)
    sync(device)
    return batch * repeats / (time.perf_counter() - start)


def training_rate(preset_name: str, size: int, stage: str, precision: str, batch: int, steps: int,
                  device: torch.device) -> dict[str, float]:
    """Images/s of a stage-2 or stage-3 step (anomalies, forward, backward, Adam) and the peak memory in GiB."""
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux -> GiB, before the model
    model = build(preset_name, size, precision=precision, batch_size=batch).to(device).train()
    params = [p for m in trained_modules(model, stage) for p in m.parameters()]
    optimiser = torch.optim.Adam(params, lr=1e-4)
    data = TrainingData(torch.rand(max(batch, 4), 3, size, size, generator=torch.Generator().manual_seed(0)))
    generator = torch.Generator().manual_seed(0)
    strategy = make_strategy(model.config)

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        if stage == "stage2":
            stage2_step(model, data, generator, device, strategy, None)
        else:
            stage3_step(model, data, generator, device)[0].backward()
        optimiser.step()

    step()  # warm-up (allocations, cuDNN choices)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    rate = batch * steps / (time.perf_counter() - start)
    if device.type == "cuda":
        peak, base = torch.cuda.max_memory_allocated(device) / 2**30, 0.0
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"images_per_s": rate, "peak_gib": peak, "step_gib": peak - base}


def agreement(preset_name: str, size: int, device: torch.device, batch: int) -> dict[str, float]:
    """Max abs difference of maps and scores, device fp32 (TF32 off) vs the CPU, same weights and inputs."""
    model = build(preset_name, size)
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(2))
    cpu_scores, cpu_maps = model.predict(images, precision="fp32", chunk_size=batch)
    if device.type == "cpu":
        return {"maps": 0.0, "scores": 0.0}
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        scores, maps = model.to(device).predict(images.to(device), precision="fp32", chunk_size=batch)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags
    return {"maps": float((maps.cpu() - cpu_maps).abs().max()),
            "scores": float((scores.cpu() - cpu_scores).abs().max())}


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A plain fixed-width table (no extra dependency)."""
    cells = [header] + [[f"{c:.3g}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--small", action="store_true", help="CPU-sized run (automatic on a CPU)")
    parser.add_argument("--preset", default=None, help="default: paper on a GPU, tiny when small")
    parser.add_argument("--size", type=int, default=None, help="image size; default 256, 64 when small")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="inference batches; default 1 32 / 1 4")
    parser.add_argument("--repeats", type=int, default=None, help="inference calls per measurement")
    parser.add_argument("--train-batch", type=int, default=None, help="default: the preset's batch_size / 2 when small")
    parser.add_argument("--train-steps", type=int, default=None, help="timed training steps per measurement")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # "stage:precision", in a fresh process
    args = parser.parse_args(argv)
    args.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    args.small = args.small or args.device.type == "cpu"
    args.preset = args.preset or ("tiny" if args.small else "paper")
    args.size = args.size or (64 if args.small else 256)
    args.batches = args.batches or ([1, 4] if args.small else [1, 32])
    args.repeats = args.repeats or (2 if args.small else 20)
    args.train_batch = args.train_batch or (2 if args.small else preset(args.preset).batch_size)
    args.train_steps = args.train_steps or (2 if args.small else 10)
    return args


def training_measurement(args: argparse.Namespace, stage: str, precision: str) -> dict[str, float]:
    """On CUDA in this process (peak reset per measurement); on the CPU in a fresh process, for its own peak RSS."""
    if args.device.type == "cuda":
        return training_rate(args.preset, args.size, stage, precision, args.train_batch, args.train_steps, args.device)
    command = [sys.executable, __file__, "--device", "cpu", "--preset", args.preset, "--size", str(args.size),
               "--train-batch", str(args.train_batch), "--train-steps", str(args.train_steps),
               "--worker", f"{stage}:{precision}"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.worker:
        stage, precision = args.worker.split(":")
        print(json.dumps(training_rate(args.preset, args.size, stage, precision, args.train_batch, args.train_steps,
                                       args.device)))
        return 0
    name = torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else "CPU"
    print(f"device: {args.device} ({name}); preset {args.preset}, {args.size}x{args.size}"
          + ("; SMALL CPU-sized run, not the paper-sized measurement" if args.small else ""))
    results: dict[str, Any] = {"device": str(args.device), "name": name, "small": args.small, "preset": args.preset,
                               "size": args.size}
    model = build(args.preset, args.size).to(args.device)
    inference = {(b, p): inference_rate(model, args.device, b, p, args.repeats)
                 for b in args.batches for p in ("fp32", "bf16")}
    rows = [[b, inference[b, "fp32"], inference[b, "bf16"], inference[b, "bf16"] / inference[b, "fp32"]]
            for b in args.batches]
    print(f"\ninference images/s ({args.repeats} calls each; paper: {PAPER_IMAGES_PER_S:g} images/s at 256x256)")
    print(table(["batch", "fp32", "bf16", "bf16/fp32"], rows))
    results["inference"] = {f"{p}_b{b}": v for (b, p), v in inference.items()}
    if not args.skip_training:
        memory = "GPU max_memory_allocated" if args.device.type == "cuda" else "CPU proxy: peak RSS of a fresh process"
        training = {(s, p): training_measurement(args, s, p) for s in ("stage2", "stage3") for p in ("fp32", "bf16")}
        rows = [[s, p, args.train_batch, m["images_per_s"], m["images_per_s"] / training[s, "fp32"]["images_per_s"],
                 m["peak_gib"], m["step_gib"]] for (s, p), m in training.items()]
        print(f"\ntraining step images/s and peak memory ({args.train_steps} steps; memory: {memory})")
        print(table(["stage", "precision", "batch", "images/s", "x fp32", "peak GiB", "step GiB"], rows))
        print("step GiB: the peak minus the process's memory before the model was built (on CUDA: the peak)")
        results["training"] = {f"{s}_{p}": m for (s, p), m in training.items()}
    diff = agreement(args.preset, args.size, args.device, max(args.batches[0], 2))
    note = " (the device is the CPU: identical by construction)" if args.device.type == "cpu" else " (TF32 off)"
    print(f"\nfp32 agreement with the CPU{note}: max |maps| diff {diff['maps']:.3g}, max |scores| diff "
          f"{diff['scores']:.3g}")
    results["agreement"] = diff
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
