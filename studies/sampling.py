"""Search over feature-sampling strategies and their parameters: Optuna TPE (OptunaSearch) with ASHA stopping,
or a plain grid over the registered strategies with --grid.

    python studies/sampling.py --num-samples 16
    python studies/sampling.py --grid --seeds 3
Each category's test set is split once (seeded, stratified by defect type; --search-fraction) into a search part,
the only images Optuna and ASHA see (interim evaluations at the same training iterations for every trial), and a
report part, on which every trial is finally evaluated and which every table shows (report_<metric>); --grid
uses the same split, so a grid's winner and a search's are reported on the same images.
"""

from ray import tune
from ray.tune.schedulers import ASHAScheduler

from studies.runner.harness import main
from studies.runner.study import Study

# Each strategy's searchable parameters: name -> (low, high, log scale); a name as low: 0.05 above that parameter
STRATEGY_PARAMS = {
    "similarity_bound": {},
    "uniform": {},
    "distance_band": {"low": (0.05, 0.5, False), "high": ("low", 1.0, False)},  # "low": drawn above that one
    "softmax_distance": {"temperature": (0.02, 2.0, True)},
    "mixture": {},  # similarity_bound + uniform per image, equal weights
    "usage_weighted": {"low": (0.05, 0.5, False), "high": ("low", 1.0, False), "smoothing": (0.1, 10.0, True)},
    # far codes first (a band from start_low to the farthest), near ones at the end ([end_low, end_high))
    "curriculum": {"start_low": (0.2, 0.9, False), "end_low": (0.0, 0.2, False), "end_high": ("end_low", 0.6, False)},
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
            low = drawn[low] + 0.05 if isinstance(low, str) else low
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
    from studies.runner.optuna_store import optuna_search

    # The comparison's baseline, the paper's strategy at its default λs, is the search's first configuration
    baseline = ([{"overrides/sampling_strategy": "similarity_bound", "overrides/similarity_bound": paper_lambda(args)}]
                if "similarity_bound" in args.strategies else None)
    return optuna_search(args, DefineByRun(list(args.strategies)), points_to_evaluate=baseline)


def paper_lambda(args) -> float:
    """The paper's λs for this command line: the preset's (0.05), or what --set similarity_bound gives."""
    from dsr.config import DSRConfig, preset
    from studies.runner.space import parse_overrides

    try:
        return preset(args.preset, **parse_overrides(args.overrides)).similarity_bound
    except ValueError:  # a bad --set or preset: refused, named, when the harness validates the space
        return DSRConfig().similarity_bound


def is_baseline(config: dict, paper: float) -> bool:
    """Whether a trial's config is the paper's strategy at its default λs (the report's baseline)."""
    overrides = config.get("overrides") or {}
    return (overrides.get("sampling_strategy", "similarity_bound") == "similarity_bound"
            and not overrides.get("sampling_params") and overrides.get("similarity_bound", paper) == paper)


def scheduler(args):
    if args.grid:
        return None
    from dsr.config import preset
    from studies.runner.space import parse_overrides
    from studies.runner.trial import default_interval

    # One clock for every trial: the training iteration (stage 2, then stage 3), not the number of reports (which
    # depends on whether a trial trained, waited for or loaded stage 1). Rungs sit on the stage-2 checkpoints,
    # where every trial is evaluated on the search part at the same iterations.
    config = preset(args.preset, **parse_overrides(args.overrides))
    max_t = config.stage2_iterations + (config.stage3_iterations if config.use_upsampling else 0)
    grace = 2 * default_interval(config.stage2_iterations, 5)
    # max_t one past the end: a trial that trains to the end is never cut before its final (report-part) result
    return KeepBaselineASHA(paper_lambda(args), time_attr="train_iteration", max_t=max_t + 1,
                            grace_period=max(1, min(grace, max_t)), reduction_factor=2)


class KeepBaselineASHA(ASHAScheduler):
    """ASHA that never stops the baseline (the paper's strategy at its default λs): every comparison needs its
    final result. Its values still count at every rung, as any trial's."""

    def __init__(self, paper: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.paper = paper

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        return self.CONTINUE if is_baseline(trial.config, self.paper) else decision


STUDY = Study(name="sampling", description=__doc__, space=space, searcher=searcher, scheduler=scheduler,
              add_arguments=add_arguments, default_categories=1, split_test=True)

if __name__ == "__main__":
    main(STUDY)
