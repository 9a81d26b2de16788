"""Search/report split of a test set: disjoint, complete, stratified by defect type, seeded."""

import pytest

from dsr.evaluation.split import split_test_set, subset_indices

NAMES = [f"good/{i:03d}.png" for i in range(10)] + [f"crack/{i:03d}.png" for i in range(5)] + ["hole/000.png"]
TYPES = [n.split("/")[0] for n in NAMES]


def test_parts_are_disjoint_complete_and_stratified() -> None:
    split = split_test_set(NAMES, TYPES, 0.5, seed=1)
    assert not set(split["search"]) & set(split["report"])
    assert sorted(split["search"] + split["report"]) == sorted(NAMES)
    for kind, total in (("good", 10), ("crack", 5)):
        search = sum(n.startswith(kind) for n in split["search"])
        report = sum(n.startswith(kind) for n in split["report"])
        assert search + report == total and search >= 1 and report >= 1 and abs(search - report) <= 1


def test_split_is_seeded_and_the_fraction_is_honoured() -> None:
    assert split_test_set(NAMES, TYPES, 0.5, seed=3) == split_test_set(list(reversed(NAMES)),
                                                                        list(reversed(TYPES)), 0.5, seed=3)
    assert split_test_set(NAMES, TYPES, 0.5, seed=3) != split_test_set(NAMES, TYPES, 0.5, seed=4)
    assert sum(n.startswith("good") for n in split_test_set(NAMES, TYPES, 0.3)["search"]) == 3


def test_bad_fraction_and_missing_names_are_named() -> None:
    with pytest.raises(ValueError, match="search_fraction"):
        split_test_set(NAMES, TYPES, 1.0)
    with pytest.raises(ValueError, match="'bad/9.png'"):
        subset_indices(NAMES, ["good/000.png", "bad/9.png"])
    assert subset_indices(NAMES, ["crack/000.png", "good/001.png"]) == [1, 10]
