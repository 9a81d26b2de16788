"""The hard demo (`--dataset demo_hard`) goes through the runner like the easy one: accepted by --dataset and the
data checks, built at data/demo_hard by default, built into a node's cache where the driver's copy is missing, and
its stage-1 photographs added to stage 1."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest

from dsr.config import preset
from dsr.data import list_categories
from dsr.data.demo import STAGE1_COUNT, build_demo, demo_kind, demo_stage1_folder
from studies import sampling
from studies.runner import data_checks
from studies.runner.cli import build_parser
from studies.runner.data_checks import check_data, default_demo_root, resolve_data
from studies.runner.preflight import guess_kind
from studies.runner.study import StudyError
from studies.runner.trial import RunSettings, local_trial, stage1_images


def parse(*argv: str) -> argparse.Namespace:
    return build_parser(sampling.STUDY).parse_args(["--preset", "tiny", *argv])


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict, dict, Path]]:
    """A trial of --dataset demo_hard run on a node that lacks the driver's copy: (trial, the trial on the node,
    the node's cache). The node builds the default hard demo into its cache (the one build of this module)."""
    base = tmp_path_factory.mktemp("demo_kinds")
    trial = {"dataset": "demo_hard", "data_root": str(base / "laptop" / "data" / "demo_hard"), "category": "gravel",
             "preset": "tiny"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DSR_DATA_CACHE", str(base / "cache"))
        yield trial, local_trial(trial), base / "cache"


def test_a_node_without_the_drivers_copy_builds_the_hard_demo_into_its_cache(node) -> None:
    trial, on_node, cache = node
    assert on_node["data_root"] == str(cache / "demo_hard") and not Path(trial["data_root"]).exists()
    assert demo_kind(on_node["data_root"]) == "demo_hard"
    assert list_categories("demo_hard", on_node["data_root"]) == ["brick", "grass", "gravel"]
    assert local_trial(on_node) == on_node  # found there the next time, not rebuilt elsewhere
    # an easy demo at the driver's path is not the hard one: the node builds the hard one, never reads the easy
    easy = build_demo(cache.parent / "easy", categories=["brick"], image_size=32, train_count=2, test_good_count=1,
                      test_defect_count=2, stage1_count=2)
    assert local_trial({**trial, "data_root": str(easy)})["data_root"] == str(cache / "demo_hard")


def test_stage1_of_the_hard_demo_adds_its_photographs(node, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from studies.runner import trial as trial_module

    _, on_node, _ = node
    config = preset("tiny")
    photos = demo_stage1_folder(on_node["data_root"])
    assert photos is not None and len(list(photos.glob("*.png"))) == STAGE1_COUNT
    read = []  # the folders stage 1 reads besides the categories (decoding 1,200 photographs is not the point)
    monkeypatch.setattr(trial_module, "_folder_images", lambda folder, _config: read.append(folder) or
                        torch.zeros(1, 3, config.image_size, config.image_size))
    images = stage1_images(on_node, config, RunSettings(storage="unused", experiment="x", categories=("gravel",)))
    assert read == [photos] and images.shape == (3 * 60 + 1, 3, config.image_size, config.image_size)


def test_dataset_demo_hard_is_accepted_by_the_cli_and_the_data_checks(node, monkeypatch: pytest.MonkeyPatch) -> None:
    _, on_node, cache = node
    monkeypatch.setattr(data_checks, "DATA_FOLDER", cache)  # the repository's data/ folder, here the node's cache
    args = parse("--dataset", "demo_hard", "--categories", "gravel")
    assert default_demo_root("demo_hard") == cache / "demo_hard"
    root, categories = resolve_data(args, sampling.STUDY)  # no --data: data/demo_hard, found built
    assert (root, categories) == (on_node["data_root"], ["gravel"])
    check_data(root, categories, args)  # every image and mask of gravel decodes at the tiny preset's size
    assert guess_kind(Path(root)) == "demo_hard"
    with pytest.raises(StudyError, match=r"--data .*demo_hard for --dataset demo: .*holds the hard demo"):
        resolve_data(parse("--dataset", "demo", "--data", root), sampling.STUDY)
    with pytest.raises(StudyError, match="--categories: cable not in"):
        resolve_data(parse("--dataset", "demo_hard", "--categories", "cable"), sampling.STUDY)
    with pytest.raises(SystemExit):
        parse("--dataset", "demo_extreme")
