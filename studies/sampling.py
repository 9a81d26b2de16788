"""Search over feature-sampling strategies and their parameters: Optuna TPE (OptunaSearch) with ASHA stopping,
or a plain grid over the registered strategies with --grid.

    python studies/sampling.py --num-samples 16
    python studies/sampling.py --grid --seeds 3
Every trial carries image_auroc in each result (interim evaluations at checkpoints) so ASHA can stop bad ones early.
"""

from ray import tune

from studies.runner.harness import METRIC, MODE, Study, main

# Each strategy's searchable parameters: name -> (low, high, log scale)
STRATEGY_PARAMS = {
    "similarity_bound": {},
    "uniform": {},
    "distance_band": {"low": (0.05, 0.5, False), "high": (None, 1.0, False)},  # high > low: drawn above it
    "softmax_distance": {"temperature": (0.02, 2.0, True)},
}
SIMILARITY_RANGE = (0.01, 0.5)


def add_arguments(parser):
    parser.add_argument("--grid", action="store_true", help="a grid over the strategies (defaults) instead")
    parser.add_argument("--num-samples", type=int, default=12, help="Optuna trials")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGY_PARAMS), metavar="S")


class DefineByRun:
    """Optuna's conditional space: a strategy, then only that strategy's parameters (a class: Tune pickles it)."""

    def __init__(self, strategies: list[str]) -> None:
        self.strategies = strategies

    def __call__(self, trial) -> None:
        strategy = trial.suggest_categorical("overrides/sampling_strategy", self.strategies)
        if strategy == "similarity_bound":
            trial.suggest_float("overrides/similarity_bound", *SIMILARITY_RANGE, log=True)
        drawn = {}
        for name, (low, high, log) in STRATEGY_PARAMS.get(strategy, {}).items():
            low = drawn["low"] + 0.05 if low is None else low
            drawn[name] = trial.suggest_float(f"overrides/sampling_params/{name}", low, high, log=log)


def space(args):
    if args.grid:
        return {"overrides": {"sampling_strategy": tune.grid_search(list(args.strategies))}}
    return {}


def searcher(args):
    if args.grid:
        return None
    from dsr.anomalies import STRATEGIES

    unknown = [name for name in args.strategies if name not in STRATEGIES]
    if unknown:  # the harness calls this before Ray starts: one line instead of failing trials
        known = ", ".join(sorted(STRATEGIES))
        raise ValueError(f"--strategies: unknown {', '.join(unknown)}; known strategies: {known}")
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch(space=DefineByRun(list(args.strategies)), metric=METRIC, mode=MODE)


def scheduler(args):
    if args.grid:
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="training_iteration", grace_period=4, reduction_factor=2)


STUDY = Study(name="sampling", description=__doc__, space=space, searcher=searcher, scheduler=scheduler,
              add_arguments=add_arguments, default_categories=1)

if __name__ == "__main__":
    main(STUDY)
