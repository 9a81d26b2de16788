"""Shared by the reports tests: known trial configs and metrics, a Ray Tune run that reports them, and parsers.

Every metric a fake trial reports is drawn here from a seeded RNG and kept in a dict, so the tests can recompute
each table cell on their own (with `statistics`, not pandas) and compare it with what the report wrote.
"""

from __future__ import annotations

import json
import random
import statistics
from pathlib import Path
from typing import Any

METRIC_KEYS = ("image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "aupro")
CATEGORIES = ["zipper", "bottle"]  # deliberately not sorted: tables must sort them
SEEDS = [0, 1]
# (variant, overrides) per study, deliberately out of canonical order; {} means "the preset's default".
ABLATION = [("DSR_U-", {}), ("DSR", {}), ("DSR_random", {}), ("DSR_img", {})]
LAMBDAS = [("DSR", {"similarity_bound": 0.5}), ("DSR", {"similarity_bound": 0.2}), ("DSR", {})]  # {}: the default 0.05
CODEBOOK = [("DSR", {"codebook_size": 64}), ("DSR", {})]
SAMPLING = [("DSR", {"sampling_strategy": "distance_band", "sampling_params": {"low": 0.1, "high": 0.4}}),
            ("DSR", {})]


def trial_key(config: dict[str, Any]) -> str:
    """The identity of one fake trial (also computed inside the trainable, which cannot import this module)."""
    return "|".join([config["study"], config["variant"], json.dumps(config["overrides"], sort_keys=True),
                      config["category"], str(config["seed"])])


def make_points(study: str, conditions: list[tuple[str, dict]], categories: list[str], seeds: list[int],
                dataset: str = "mvtec", preset: str = "small") -> list[dict[str, Any]]:
    """Trial configs in the results schema, one per (condition, category, seed); condition = (variant, overrides)."""
    return [{"study": study, "variant": variant, "category": category, "seed": seed, "dataset": dataset,
             "preset": preset, "overrides": overrides}
            for variant, overrides in conditions for category in categories for seed in seeds]


def known_metrics(points: list[dict[str, Any]], rng_seed: int) -> dict[str, dict[str, float]]:
    """trial_key -> the metrics that trial will report (fractions with four decimals)."""
    rng = random.Random(rng_seed)
    return {trial_key(p): {m: round(rng.uniform(0.55, 0.99), 4) for m in METRIC_KEYS} for p in points}


def run_tune_experiment(storage: Path, name: str, points: list[dict[str, Any]], metrics: dict[str, dict],
                        fail: set[str] = frozenset(), unfinished: set[str] = frozenset()) -> Path:
    """Run one Tune experiment whose trials report the known metrics; returns the experiment folder.

    Trials whose key is in `fail` raise after a first report (Tune status ERROR); those in `unfinished`
    report an "eval" stage and end without `stage == "done"`.
    """
    from ray import tune

    fail, unfinished = set(fail), set(unfinished)

    def trainable(config: dict[str, Any]) -> None:  # nested: pickled by value for the Ray workers
        import json as _json

        from ray import tune as _tune

        key = "|".join([config["study"], config["variant"], _json.dumps(config["overrides"], sort_keys=True),
                        config["category"], str(config["seed"])])
        _tune.report({"stage": "stage1", "loss": 1.0})
        if key in fail:
            raise RuntimeError(f"planned failure of {key}")
        _tune.report({"stage": "eval", "loss": 0.5})
        if key in unfinished:
            return
        _tune.report({"stage": "done", **metrics[key]})

    # One grid cell per point; each schema key is looked up from the point (the trial config also holds "cell").
    space: dict[str, Any] = {"cell": tune.grid_search(list(range(len(points))))}
    for k in points[0]:
        space[k] = tune.sample_from(lambda spec, k=k: points[spec["config"]["cell"]][k])
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(storage), name=name, verbose=0),
    )
    tuner.fit()
    _wait_for_result_files(storage / name, len(points))
    return storage / name


def _wait_for_result_files(experiment: Path, n_trials: int, timeout_s: float = 20.0) -> None:
    """Tune copies result files from its staging folder to storage_path in the background; wait for all of them.

    Seen once under heavy load: a trial's result.json had not reached storage when the report was built. The
    tests are about the reports, so they start from a complete copy or fail here with a clear message.
    """
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        trial_dirs = [d for d in experiment.iterdir() if d.is_dir() and d.name.startswith("trainable")]
        missing = [d.name for d in trial_dirs if not (d / "result.json").is_file()]
        if len(trial_dirs) == n_trials and not missing:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"Tune did not write every result file to {experiment}: {len(trial_dirs)} of "
                               f"{n_trials} trial folders, without result.json: {missing}")
        time.sleep(0.5)


def run_unrelated_experiment(storage: Path, name: str) -> Path:
    """A Tune experiment that is not a dsr study (no `study` in its config)."""
    from ray import tune

    def trainable(config: dict[str, Any]) -> None:
        from ray import tune as _tune

        _tune.report({"loss": config["lr"]})

    tune.Tuner(trainable, param_space={"lr": tune.grid_search([0.1, 0.2])},
               run_config=tune.RunConfig(storage_path=str(storage), name=name, verbose=0)).fit()
    return storage / name


# --- expected values, computed independently of reports.tables -----------------------------------------------

def expected_cell(points: list[dict], metrics: dict[str, dict], metric: str, done: set[str],
                  seeds_expected: list[int], categories: list[str]) -> tuple[float | None, float | None, int]:
    """(mean, std or None, n complete seeds) in percent over the points of one condition; None if no complete seed."""
    per_seed = []
    for seed in seeds_expected:
        values = [100 * metrics[trial_key(p)][metric] for p in points
                  if p["seed"] == seed and trial_key(p) in done]
        cats = {p["category"] for p in points if p["seed"] == seed and trial_key(p) in done}
        if cats == set(categories):
            per_seed.append(statistics.fmean(values))
    if not per_seed:
        return None, None, 0
    return statistics.fmean(per_seed), (statistics.stdev(per_seed) if len(per_seed) > 1 else None), len(per_seed)


def fmt(mean: float | None, std: float | None = None, n: int | None = None, n_expected: int | None = None) -> str:
    """The cell text the report should show (one decimal, "–" when missing); kept apart from reports.render."""
    if mean is None:
        return "–"
    text = f"{mean:.1f}" if std is None else f"{mean:.1f} ± {std:.1f}"
    if n is not None and n_expected is not None and n < n_expected:
        text += f" ({n}/{n_expected} seeds)"
    return text


def read_markdown_table(path: Path) -> list[dict[str, str]]:
    """The first pipe table of a Markdown file as a list of {header: cell} rows."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("|")]
    assert len(lines) >= 2, f"no pipe table in {path}"
    split = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]
    header, body = split[0], [row for row in split[1:] if not set("".join(row)) <= set(":-")]
    return [dict(zip(header, row)) for row in body]
