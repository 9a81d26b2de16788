"""Training-speed benchmarks, side by side in one run.

Part "anomalies": the vectorised feature-space sampler (`similarity_bound`, dsr.anomalies) against a
straightforward per-image, per-masked-position loop like the reference's (distances to all K codes, sort, draw a
rank), at K = 4096, D = 128, batch 8, ~30% of latent positions masked, for 64x64 (hi level at 256 px) and
32x32 (lo level) latents. The loop is time-bounded: past --baseline-budget seconds it stops and its time is
extrapolated linearly to all positions (the output says so). Also times every registered strategy.
Part "training": training throughput (to be added).

    python benchmarks/train_speed.py --part anomalies
    python benchmarks/train_speed.py --part anomalies --latent-sizes 64 --baseline-budget 10 --output bench.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any, Callable

import torch
from tabulate import tabulate

from dsr.anomalies.strategies import STRATEGIES, make_strategy, rank_of, ranking_distances
from dsr.config import DSRConfig


# --------------------------------------------------------------------------------------------------------------
# Part "anomalies"
# --------------------------------------------------------------------------------------------------------------

def make_latents(batch: int, size: int, codebook_size: int, dim: int, coverage: float, seed: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features near random codes, a codebook, and the masked rows: (z (N,D), codebook (K,D), sample_ids (N,))."""
    g = torch.Generator().manual_seed(seed)
    codebook = torch.randn(codebook_size, dim, generator=g)
    nearest = torch.randint(codebook_size, (batch, size, size), generator=g)
    z = codebook[nearest] + 0.5 * torch.randn(batch, size, size, dim, generator=g)  # (B, h, w, D)
    masked = torch.rand(batch, size, size, generator=g) < coverage  # (B, h, w)
    return z[masked], codebook, masked.nonzero()[:, 0]


def loop_similarity_bound(z: torch.Tensor, codebook: torch.Tensor, sample_ids: torch.Tensor, num_images: int,
                          bound: float, excluded_fraction: float, generator: torch.Generator, budget_s: float
                          ) -> tuple[torch.Tensor, int, float]:
    """The baseline: per image s ~ U[bound, 1); for each of its masked positions compute the squared distances
    to all codes, sort them and draw a rank from [floor(f K), max(floor(s K) + 1, floor(f K) + 1)).

    The strengths s are drawn first, as the vectorised strategy does, so with the same seed both use the same s.
    Stops once `budget_s` seconds have passed. Returns (indices of the rows done, rows done, seconds).
    """
    k = codebook.shape[0]
    low = int(excluded_fraction * k)
    strengths = bound + (1.0 - bound) * torch.rand(num_images, generator=generator, dtype=torch.float64)
    chosen: list[int] = []
    start = time.perf_counter()
    for image in range(num_images):
        high = max(int(float(strengths[image]) * k) + 1, low + 1)
        for row in (sample_ids == image).nonzero()[:, 0].tolist():
            distances = ((codebook - z[row]) ** 2).sum(1)  # (K,)
            order = torch.argsort(distances)
            rank = int(torch.randint(low, high, (), generator=generator))
            chosen.append(int(order[rank]))
            if time.perf_counter() - start > budget_s:
                return torch.tensor(chosen), len(chosen), time.perf_counter() - start
    return torch.tensor(chosen), len(chosen), time.perf_counter() - start


def time_call(fn: Callable[[], Any], repeats: int) -> float:
    """Median seconds of `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def mean_rank(z: torch.Tensor, codebook: torch.Tensor, index: torch.Tensor) -> float:
    """Mean distance rank of the chosen codes (a sanity check that both samplers draw the same distribution)."""
    if index.numel() == 0:
        return float("nan")
    code_norms = (codebook * codebook).sum(1)
    ranks = [rank_of(ranking_distances(rows, codebook, code_norms), idx)
             for rows, idx in zip(z[:len(index)].split(1024), index.split(1024))]
    return float(torch.cat(ranks).double().mean())


def benchmark_anomalies(latent_sizes: list[int], batch: int, codebook_size: int, dim: int, coverage: float,
                        bound: float, budget_s: float, repeats: int, seed: int) -> list[dict[str, Any]]:
    """One row per latent size: loop vs vectorised similarity_bound, plus every strategy's vectorised time."""
    config = DSRConfig(codebook_size=codebook_size, embedding_dim=dim, similarity_bound=bound)
    rows = []
    for size in latent_sizes:
        z, codebook, sample_ids = make_latents(batch, size, codebook_size, dim, coverage, seed)
        n = z.shape[0]
        strategy = make_strategy(config)
        vectorised_s = time_call(lambda: strategy.sample(z, codebook, sample_ids, batch,
                                                         torch.Generator().manual_seed(seed)), repeats)
        vectorised_index = strategy.sample(z, codebook, sample_ids, batch, torch.Generator().manual_seed(seed))
        loop_index, done, loop_done_s = loop_similarity_bound(
            z, codebook, sample_ids, batch, bound, config.excluded_nearest_fraction,
            torch.Generator().manual_seed(seed), budget_s)
        loop_s = loop_done_s * n / max(done, 1)  # linear extrapolation when the budget stopped the loop
        order = torch.argsort(sample_ids, stable=True)  # the loop visits rows image by image
        row: dict[str, Any] = {
            "latent": f"{size}x{size}", "batch": batch, "K": codebook_size, "masked positions": n,
            "loop s": loop_s, "loop extrapolated": done < n, "loop positions timed": done,
            "vectorised s": vectorised_s, "speed-up": loop_s / vectorised_s,
            # over the rows the loop did, in its order: equal up to noise when both draw the same distribution
            "mean rank loop": mean_rank(z[order], codebook, loop_index),
            "mean rank vectorised": mean_rank(z[order], codebook, vectorised_index[order][:done]),
        }
        for name in sorted(STRATEGIES):
            other = make_strategy(config.replace(sampling_strategy=name))
            row[f"{name} s"] = time_call(lambda: other.sample(z, codebook, sample_ids, batch,
                                                              torch.Generator().manual_seed(seed)), repeats)
        rows.append(row)
    return rows


def print_anomalies(rows: list[dict[str, Any]], budget_s: float) -> None:
    main = [[r["latent"], r["masked positions"],
             f"{r['loop s']:.2f}" + (" *" if r["loop extrapolated"] else ""),
             f"{r['vectorised s'] * 1e3:.0f}", f"{r['speed-up']:.0f}x",
             f"{r['mean rank loop']:.0f} / {r['mean rank vectorised']:.0f}"] for r in rows]
    print("similarity_bound sampling, per-position loop vs vectorised "
          f"(batch {rows[0]['batch']}, K = {rows[0]['K']}, {torch.get_num_threads()} thread(s))")
    print(tabulate(main, headers=["latent", "masked positions", "loop s", "vectorised ms", "speed-up",
                                  "mean rank loop / vectorised (same rows)"]))
    for r in rows:
        if r["loop extrapolated"]:
            print(f"* {r['latent']}: the loop stopped at the {budget_s:.0f} s budget after "
                  f"{r['loop positions timed']} of {r['masked positions']} positions; its time is extrapolated "
                  "linearly to all positions.")
    names = sorted(STRATEGIES)
    print("\nevery registered strategy, vectorised (ms)")
    print(tabulate([[r["latent"]] + [f"{r[f'{name} s'] * 1e3:.0f}" for name in names] for r in rows],
                   headers=["latent"] + names))


def run_anomalies(args: argparse.Namespace) -> dict[str, Any]:
    rows = benchmark_anomalies(args.latent_sizes, args.batch, args.codebook_size, args.dim, args.coverage,
                               args.similarity_bound, args.baseline_budget, args.repeats, args.seed)
    print_anomalies(rows, args.baseline_budget)
    return {"anomalies": rows}


# --------------------------------------------------------------------------------------------------------------
# Part "training": stage-2 throughput per preset and precision, each in its own process (own peak memory)
# --------------------------------------------------------------------------------------------------------------

REFERENCE_STAGE2_S = {8: 52.0, 2: 12.5}  # reference code, 256x256, this 2-core CPU (issue 3; not re-measured here)
REFERENCE_STAGE2_GIB = 7.4


def stage2_worker(preset_name: str, precision: str, batch: int, warmup: int, steps: int,
                  micro_batch: int = 0) -> dict[str, Any]:
    """Seconds per stage-2 iteration (after `warmup` iterations) and the process's peak resident memory."""
    import resource

    from dsr import DSR, preset
    from dsr.training import TrainingData, run_stage

    config = preset(preset_name, precision=precision, batch_size=batch, stage2_iterations=warmup + steps,
                    micro_batch_size=micro_batch)
    torch.manual_seed(0)
    model = DSR(config)
    images = torch.rand(16, 3, config.image_size, config.image_size, generator=torch.Generator().manual_seed(0))
    stamps: list[float] = []
    run_stage("stage2", model, TrainingData(images), progress=False, report_every=1,
              callback=lambda event: stamps.append(time.perf_counter()))
    per_step = (stamps[-1] - stamps[warmup - 1]) / steps
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"s_per_step": per_step, "peak_gib": peak}


def run_training(args: argparse.Namespace) -> dict[str, Any]:
    import subprocess
    import sys

    print(f"\nstage-2 training throughput ({args.threads} threads); reference: "
          f"{REFERENCE_STAGE2_S[8]} s/step at batch 8, {REFERENCE_STAGE2_GIB} GiB (paper preset, 256x256)")
    header = f"{'preset':<8}{'precision':<11}{'micro':>6}{'batch':>6}{'s/step':>9}{'steps/s':>9}{'x fp32':>8}{'x reference':>13}{'peak GiB':>10}"
    print(header)
    print("-" * len(header))
    rows = []
    for preset_name in args.presets:
        fp32 = None
        for precision, micro in [(p, m) for p in args.precisions for m in args.micro_batches]:
            command = [sys.executable, __file__, "--threads", str(args.threads), "--stage2-worker", preset_name,
                       precision, str(args.train_batch), str(args.warmup), str(args.steps), str(micro)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{preset_name:<8}{precision:<11} failed: {done.stderr.strip().splitlines()[-1]}")
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            fp32 = fp32 or (row["s_per_step"] if precision == "fp32" and micro == 0 else None)
            reference = REFERENCE_STAGE2_S.get(args.train_batch) if preset_name == "paper" else None
            row.update(preset=preset_name, precision=precision, micro_batch=micro, batch=args.train_batch)
            rows.append(row)
            print(f"{preset_name:<8}{precision:<11}{micro or '-':>6}{args.train_batch:>6}{row['s_per_step']:>9.3f}"
                  f"{1 / row['s_per_step']:>9.3f}{(fp32 / row['s_per_step']) if fp32 else float('nan'):>8.2f}"
                  f"{(reference / row['s_per_step']) if reference else float('nan'):>13.2f}{row['peak_gib']:>10.2f}",
                  flush=True)
    return {"training": rows}


PARTS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "anomalies": run_anomalies,
    "training": run_training,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=[*PARTS, "all"], default="all")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--output", help="also write the results as JSON to this file")
    parser.add_argument("--stage2-worker", nargs=6, help=argparse.SUPPRESS)
    training = parser.add_argument_group("part 'training'")
    training.add_argument("--presets", nargs="+", default=["small", "paper"])
    training.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    training.add_argument("--train-batch", type=int, default=8)
    training.add_argument("--micro-batches", type=int, nargs="+", default=[0, 2],
                          help="micro-batch sizes (0: whole batch at once)")
    training.add_argument("--warmup", type=int, default=1)
    training.add_argument("--steps", type=int, default=3)
    anomalies = parser.add_argument_group("part 'anomalies'")
    anomalies.add_argument("--latent-sizes", type=int, nargs="+", default=[64, 32])
    anomalies.add_argument("--batch", type=int, default=8)
    anomalies.add_argument("--codebook-size", type=int, default=4096)
    anomalies.add_argument("--dim", type=int, default=128)
    anomalies.add_argument("--coverage", type=float, default=0.3, help="fraction of masked latent positions")
    anomalies.add_argument("--similarity-bound", type=float, default=0.2)
    anomalies.add_argument("--baseline-budget", type=float, default=30.0,
                           help="seconds after which the loop baseline stops and is extrapolated")
    anomalies.add_argument("--repeats", type=int, default=3)
    anomalies.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.stage2_worker:
        name, precision, batch, warmup, steps, micro = args.stage2_worker
        print(json.dumps(stage2_worker(name, precision, int(batch), int(warmup), int(steps), int(micro))))
        return
    results: dict[str, Any] = {}
    for name, run in PARTS.items():
        if args.part in (name, "all"):
            results.update(run(args))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
