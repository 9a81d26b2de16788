"""`--repeats`: each configuration a searcher samples is judged on every (category, seed) run of the study, and
the searcher is told the mean over them (`RepeatedSearch`), so a winner is not one lucky seed.

Ray Tune's own `Repeater` cannot be used: it averages one metric only (not a multi-objective list), it saves
none of its groups (a resumed search would lose them) and it numbers repeats instead of naming their category and
seed. Here every trial of a group gets the sampled configuration with its own `category` and `seed`.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from ray.tune.search import Searcher

from studies.runner.study import StudyError


def repeat_runs(categories: list[str], repeats: int) -> list[tuple[str, int]]:
    """The (category, seed) runs every sampled configuration gets: each category with seeds 0..repeats-1."""
    if repeats < 1:
        raise StudyError(f"--repeats must be >= 1, got {repeats}")
    return [(category, seed) for seed in range(repeats) for category in categories]


class RepeatedSearch(Searcher):
    """Wraps a searcher: its every suggestion becomes one trial per run (category, seed); once every trial of the
    group has ended, the wrapped searcher gets the group's mean of each metric (NaN-ignoring; a stopped trial
    counts with its last result, as Tune gives it to any searcher)."""

    def __init__(self, searcher: Searcher, runs: list[tuple[str, int]]) -> None:
        super().__init__(metric=searcher.metric, mode=searcher.mode)
        self.searcher = searcher
        self.runs = list(runs)
        self.groups: list[dict[str, Any]] = []  # {"primary", "config", "trials": {trial_id: run index}, "scores"}
        self.trial_group: dict[str, int] = {}

    @property
    def metrics(self) -> list[str]:
        metric = self.searcher.metric
        return list(metric) if isinstance(metric, (list, tuple)) else [metric]

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict | None:
        group = self.groups[-1] if self.groups else None
        if group is None or len(group["trials"]) == len(self.runs):
            config = self.searcher.suggest(trial_id)
            if config is None or config == Searcher.FINISHED:
                return config
            group = {"primary": trial_id, "config": config, "trials": {}, "scores": {}}
            self.groups.append(group)
        index = len(group["trials"])
        group["trials"][trial_id] = index
        self.trial_group[trial_id] = len(self.groups) - 1
        category, seed = self.runs[index]
        return {**group["config"], "category": category, "seed": seed}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Interim results stay with the trial: the wrapped searcher only sees a group's means."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.trial_group:
            return
        group = self.groups[self.trial_group[trial_id]]
        group["scores"][trial_id] = [_value(result, m) for m in self.metrics]
        if len(group["scores"]) < len(self.runs):
            return
        means = [_nanmean([scores[i] for scores in group["scores"].values()]) for i in range(len(self.metrics))]
        if any(math.isnan(m) for m in means):  # no run of the group gave this metric: the group failed
            self.searcher.on_trial_complete(group["primary"], result=None, error=True)
            return
        self.searcher.on_trial_complete(group["primary"], result=dict(zip(self.metrics, means)), error=False)

    def get_state(self) -> dict:
        """The groups (Tune saves them beside the wrapped searcher's own file, and restores both)."""
        return copy.deepcopy({k: v for k, v in self.__dict__.items() if k != "searcher"})

    def set_state(self, state: dict) -> None:
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)


def _value(result: dict | None, metric: str) -> float:
    value = (result or {}).get(metric)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def _nanmean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


__all__ = ["RepeatedSearch", "repeat_runs"]
