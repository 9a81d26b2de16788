"""Disjoint search and report parts of a test set, so a searched study never reports what it tuned on.

A searcher (Optuna) and a scheduler (ASHA) pick configurations by a metric; measured on the same images the
report shows, the winner's number is optimistic by construction. `split_test_set` cuts each category's test set
once, seeded and stratified by defect type, into a search part (all the searcher sees) and a report part (all
tables show). The split is a small JSON-able dict, saved with the experiment so a resumed or re-reported study
uses the same one.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

SPLIT_FORMAT = "dsr-studies/test-split/1"


def split_test_set(names: Sequence[str], defect_types: Sequence[str], search_fraction: float = 0.5,
                   seed: int = 0) -> dict[str, list[str]]:
    """{"search": [...], "report": [...]}: the image names of each part, every defect type (and "good") split
    in the same proportion (at least one image of each type in each part when the type has two or more).

    Raises ValueError for a fraction outside (0, 1), mismatched inputs, or duplicate names.
    """
    if not 0.0 < search_fraction < 1.0:
        raise ValueError(f"search_fraction must lie in (0, 1), got {search_fraction!r}")
    if len(names) != len(defect_types):
        raise ValueError(f"{len(names)} names but {len(defect_types)} defect types")
    if len(set(names)) != len(names):
        raise ValueError("image names must be unique to split a test set")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[str]] = {"search": [], "report": []}
    by_type: dict[str, list[str]] = {}
    for name, kind in zip(names, defect_types):
        by_type.setdefault(str(kind), []).append(str(name))
    for kind in sorted(by_type):
        members = sorted(by_type[kind])
        order = rng.permutation(len(members))
        count = int(round(search_fraction * len(members)))
        if len(members) >= 2:
            count = min(max(count, 1), len(members) - 1)
        parts["search"] += [members[i] for i in order[:count]]
        parts["report"] += [members[i] for i in order[count:]]
    return {part: sorted(values) for part, values in parts.items()}


def subset_indices(names: Sequence[str], chosen: Sequence[str]) -> list[int]:
    """Positions of `chosen` names in `names` (in `names` order); ValueError naming a name that is missing."""
    position = {str(name): i for i, name in enumerate(names)}
    missing = [name for name in chosen if name not in position]
    if missing:
        raise ValueError(f"test image {missing[0]!r} of the saved split is not in the test set "
                         f"({len(missing)} missing): the data changed since the split was made")
    return sorted(position[name] for name in chosen)


def split_document(splits: dict[str, dict[str, list[str]]], search_fraction: float, seed: int) -> dict[str, Any]:
    """The JSON document saved with an experiment: format, parameters and each category's parts."""
    return {"format": SPLIT_FORMAT, "search_fraction": search_fraction, "seed": seed, "categories": splits}
