"""Threads against processes for one stage-1 model on a multi-core CPU, side by side in one run.

The default study has one stage-1 model; its phase may give that model all the machine's CPUs
(`--stage1-cpus`, studies/runner/stage1.py: phase_cpus). This measures what that buys, per stage-1 step of a preset:

- `threads=1`: one process, one torch thread (a main trial's share);
- `threads=N`: one process, N torch threads (what the phase does);
- `processes=N`: N processes, one thread each, data-parallel (DistributedDataParallel over gloo, the batch split
  between them): the alternative, timed only (its codebook EMA would need syncing to be a real option).

Each mode runs in its own process(es), in turn A B C A B C ..., and the medians and ratios to `threads=1` are
printed beside the machine's fp32 matmul GFLOP/s (2048 x 2048, 1 and N threads), so a figure from another CPU
can be compared.

    python benchmarks/stage1_cpus.py                       # small preset, N = all CPUs, 3 rounds
    python benchmarks/stage1_cpus.py --preset tiny --steps 5 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import warnings
from typing import Any

import torch
from tabulate import tabulate

from dsr.provenance import cpu_model


def matmul_gflops(threads: int, size: int = 2048, repeats: int = 5) -> float:
    """fp32 matmul throughput at `threads` torch threads (best of `repeats`)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size ** 3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _stage1_setup(preset_name: str, batch: int, seed: int):
    from dsr.config import preset
    from dsr.model import DSR

    torch.manual_seed(0)
    config = preset(preset_name)
    model = DSR(config)
    model.train()
    images = torch.rand(256, 3, config.image_size, config.image_size, generator=torch.Generator().manual_seed(0))
    return model, images, torch.Generator().manual_seed(seed), batch or config.stage1_batch_size


def thread_worker(preset_name: str, threads: int, warmup: int, steps: int) -> float:
    """Seconds per stage-1 step in this process at `threads` torch threads."""
    from dsr.training.steps import stage1_loss

    torch.set_num_threads(threads)
    model, images, generator, batch = _stage1_setup(preset_name, 0, 0)
    optimizer = torch.optim.Adam(model.latent.parameters(), lr=1e-3)

    def step() -> None:
        optimizer.zero_grad()
        loss, _ = stage1_loss(model, images[torch.randint(len(images), (batch,), generator=generator)])
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    return sum(_timed(step) for _ in range(steps)) / steps


def process_worker(rank: int, world: int, port: int, preset_name: str, warmup: int, steps: int) -> float:
    """Seconds per stage-1 step with `world` data-parallel processes of one thread each (rank 0's clock)."""
    import torch.distributed as dist
    from torch.nn import functional as F
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        model, images, generator, batch = _stage1_setup(preset_name, 0, rank)
        with warnings.catch_warnings():  # torch 2.14 deprecates the name, not the behaviour we need (no buffer sync)
            warnings.simplefilter("ignore", FutureWarning)
            latent = DistributedDataParallel(model.latent, broadcast_buffers=False)
        optimizer = torch.optim.Adam(latent.parameters(), lr=1e-3)
        share = max(1, batch // world)

        def step() -> None:
            optimizer.zero_grad()
            part = images[torch.randint(len(images), (share,), generator=generator)]
            reconstruction, encoding = latent(part)
            (F.mse_loss(reconstruction, part) + encoding.loss).backward()
            optimizer.step()

        for _ in range(warmup):
            step()
        dist.barrier()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        dist.barrier()
        return (time.perf_counter() - start) / steps
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_mode(mode: str, count: int, args: argparse.Namespace) -> float:
    """One measurement of a mode in fresh process(es): seconds per step."""
    base = [sys.executable, __file__, "--worker", mode, str(count), args.preset, str(args.warmup), str(args.steps)]
    if mode == "threads":
        out = subprocess.run(base, check=True, capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])
    port = str(_free_port())
    workers = [subprocess.Popen([*base, str(rank), port], stdout=subprocess.PIPE, text=True) for rank in range(count)]
    outputs = [worker.communicate()[0] for worker in workers]
    if any(worker.returncode for worker in workers):
        raise RuntimeError(f"processes={count}: a worker failed")
    return json.loads(outputs[0].strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="N (default: all CPUs)")
    parser.add_argument("--steps", type=int, default=40, help="timed stage-1 steps per measurement")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each mode, in turn")
    parser.add_argument("--output", help="also write the results as JSON to this file")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        mode, count, preset_name, warmup, steps, *rest = args.worker
        if mode == "threads":
            seconds = thread_worker(preset_name, int(count), int(warmup), int(steps))
        else:
            seconds = process_worker(int(rest[0]), int(count), int(rest[1]), preset_name, int(warmup), int(steps))
        print(json.dumps(seconds))
        return {}

    modes = [("threads", 1), ("threads", args.cpus), ("processes", args.cpus)]
    times: dict[str, list[float]] = {f"{mode}={count}": [] for mode, count in modes}
    for _ in range(args.rounds):
        for mode, count in modes:
            times[f"{mode}={count}"].append(run_mode(mode, count, args))
    gflops = {threads: matmul_gflops(threads) for threads in sorted({1, args.cpus})}
    baseline = statistics.median(times["threads=1"])
    rows = [[name, f"{1000 * statistics.median(values):.1f}",
             f"{1000 * min(values):.1f}–{1000 * max(values):.1f}", f"{baseline / statistics.median(values):.2f}"]
            for name, values in times.items()]
    cpu = cpu_model()
    print(f"{cpu}, {os.cpu_count()} CPUs; fp32 matmul 2048²: " +
          ", ".join(f"{value:.0f} GFLOP/s on {threads} thread(s)" for threads, value in gflops.items()))
    print(f"stage-1 step, preset {args.preset}, {args.steps} steps x {args.rounds} rounds (in turn):")
    print(tabulate(rows, headers=["mode", "ms/step median", "min–max", "speed-up vs threads=1"]))
    result = {"cpu": cpu, "cpus": args.cpus, "preset": args.preset, "gflops": gflops, "seconds_per_step": times}
    if args.output:
        with open(args.output, "w") as handle:
            json.dump(result, handle, indent=1)
    return result


if __name__ == "__main__":
    main()
