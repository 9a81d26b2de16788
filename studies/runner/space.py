"""A study's trial configurations: `--set` overrides, the Tune param space, its grid points, and their validation
(every point resolves to a valid DSRConfig before Ray starts)."""

from __future__ import annotations

import argparse
import itertools
import json
from typing import Any

from studies.runner.study import Study, StudyError


def parse_override(text: str) -> tuple[str, Any]:
    """FIELD=VALUE with VALUE parsed as JSON where it can be (numbers, true/false, null, dicts), else a string.
    StudyError when there is no `=` or FIELD is not a DSRConfig field."""
    from dsr.config import DSRConfig

    if "=" not in text:
        raise StudyError(f"--set {text!r}: expected FIELD=VALUE")
    name, raw = text.split("=", 1)
    if name not in DSRConfig.__dataclass_fields__:
        raise StudyError(f"--set {name}: not a DSRConfig field")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return name, value


def parse_overrides(texts: list[str]) -> dict[str, Any]:
    """Every `--set` of a command line as {field: value} (a later --set of a field wins)."""
    return dict(parse_override(text) for text in texts)


def grid_points(space: Any) -> list[Any]:
    """Every concrete value a (possibly nested) space of grid_search / constants can take, for validation."""
    if isinstance(space, dict):
        if set(space) == {"grid_search"}:
            return [p for value in space["grid_search"] for p in grid_points(value)]
        keys = list(space)
        options = [grid_points(space[k]) for k in keys]
        return [dict(zip(keys, combo)) for combo in itertools.product(*options)]
    return [space]


def build_param_space(study: Study, args: argparse.Namespace, data_root: str, categories: list[str]) -> dict:
    """The Tune param space: the fixed trial keys, categories and seeds as grids, then what the study varies
    (its "overrides" merged over the command line's --set)."""
    from ray import tune

    overrides = parse_overrides(args.overrides)
    if study.is_searched(args):  # the searcher gives each trial its category and seed (studies.runner.repeats)
        categories, seeds = categories[:1], 1
    else:
        seeds = args.seeds
    space: dict[str, Any] = {
        "study": study.name,
        "preset": args.preset,
        "dataset": args.dataset,
        "data_root": data_root,
        "variant": "DSR",
        "category": tune.grid_search(categories) if len(categories) > 1 else categories[0],
        "seed": tune.grid_search(list(range(seeds))) if seeds > 1 else 0,
        "overrides": overrides,
    }
    varied = study.space(args)
    if "overrides" in varied:
        varied = {**varied, "overrides": {**overrides, **varied["overrides"]}}
    space.update(varied)
    return space


def validate_space(space: dict[str, Any], study: Study, args: argparse.Namespace) -> int:
    """Resolve every grid point's DSRConfig (unknown variant/strategy, bad value: one line); the number of points
    (0 for a searched study, whose fixed part is checked: one category and one seed per search)."""
    from studies.runner.trial import resolve_config

    points = grid_points(space)
    searched = study.is_searched(args)
    if searched:
        if args.seeds > 1:
            raise StudyError(f"--seeds {args.seeds}: a searched study judges each configuration on seeds "
                             f"0..N-1 with --repeats N (and on every --categories value), not --seeds")
        if len(points) > 1:
            raise StudyError("a searched study's space has no grid: give its varied values to the searcher")
        points = points[:1]
    elif getattr(args, "repeats", 1) > 1:
        raise StudyError(f"--repeats {args.repeats}: repeats are for searches; a grid runs every point on seeds "
                         f"0..N-1 with --seeds N")
    for point in points:
        try:
            resolve_config(point)
        except ValueError as error:
            raise StudyError(str(error).splitlines()[0]) from error
    return 0 if searched else len(points)


__all__ = ["build_param_space", "grid_points", "parse_override", "parse_overrides", "validate_space"]
