"""`--cluster` checks remote inputs before `ray up`, from listings of an S3 API (moto on loopback), never a download:
a dataset whose layout is not `--dataset`'s, `--stage1-data` / `--stage1-checkpoint` URIs; and what nodes fetch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from s3_server import s3_server_in_environment

import studies.runner.launch as launch
from studies.ablation import STUDY
from studies.runner.harness import build_parser
from studies.runner.preflight import check_remote_dataset
from studies.runner.runtime import PROJECT_DIR
from studies.runner.storage import local_file

AWS = PROJECT_DIR / "cluster" / "aws.yaml"
BUCKET = "dsr-preflight"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with s3_server_in_environment() as server:
        server.create_bucket(BUCKET)
        root = tmp_path_factory.mktemp("upload")
        _mvtec(root / "mvtec")
        (root / "photos" / "a").mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "photos" / "a" / "0.jpg")
        (root / "ckpt").mkdir()
        (root / "ckpt" / "vq.pckl").write_bytes(b"not really a model")
        server.upload_folder(root, BUCKET, "in")
        yield server


def _mvtec(root: Path) -> None:
    """Two categories in MVTec's layout (tiny images; contents never read by the checks)."""
    image = Image.fromarray(np.zeros((8, 8, 3), np.uint8))
    for category in ("bottle", "cable"):
        for folder in ("train/good", "test/good", "test/crack", "ground_truth/crack"):
            (root / category / folder).mkdir(parents=True)
        image.save(root / category / "train/good/000.png")
        image.save(root / category / "test/good/000.png")
        image.save(root / category / "test/crack/000.png")
        image.save(root / category / "ground_truth/crack/000_mask.png")


def _prepare(*argv: str) -> launch.ClusterRun:
    argv = ["--cluster", str(AWS), "--storage", f"s3://{BUCKET}/out", "--preset", "tiny", *argv]
    return launch.prepare_cluster_run(STUDY.name, build_parser(STUDY).parse_args(argv), argv)


def test_an_mvtec_tree_with_the_default_dataset_kind_is_refused_before_ray_up(s3) -> None:
    with pytest.raises(ValueError) as info:
        _prepare("--data", f"s3://{BUCKET}/in/mvtec")  # --dataset demo, the default
    message = str(info.value)
    assert "\n" not in message and f"--data s3://{BUCKET}/in/mvtec" in message and "--dataset demo" in message
    assert "pass --dataset mvtec" in message  # what the layout is


def test_the_matching_kind_passes_and_categories_are_checked_against_the_listing(s3) -> None:
    run = _prepare("--dataset", "mvtec", "--data", f"s3://{BUCKET}/in/mvtec", "--categories", "cable")
    assert "--data" in run.entrypoint
    assert check_remote_dataset(f"s3://{BUCKET}/in/mvtec", "mvtec", None, 64) == ["bottle", "cable"]
    assert check_remote_dataset(f"s3://{BUCKET}/in/mvtec", "mvtec", ["all"], 64) == ["bottle", "cable"]
    with pytest.raises(ValueError, match="--categories carpet not there") as info:
        _prepare("--dataset", "mvtec", "--data", f"s3://{BUCKET}/in/mvtec", "--categories", "carpet")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("argv, named", [
    (["--dataset", "mvtec", "--data", f"s3://{BUCKET}/in/nothing"], "nothing there"),
    (["--dataset", "folder", "--data", f"s3://{BUCKET}/in/mvtec"], "pass --dataset mvtec"),
    (["--stage1-data", f"s3://{BUCKET}/in/ckpt"], "no image files"),
    (["--stage1-checkpoint", f"s3://{BUCKET}/in/ckpt/missing.pckl"], "no such file"),
    (["--stage1-checkpoint", f"s3://{BUCKET}/in/ckpt"], "a folder"),
])
def test_remote_inputs_that_cannot_work_are_one_line_naming_the_option(s3, argv, named) -> None:
    with pytest.raises(ValueError) as info:
        _prepare(*argv)
    message = str(info.value)
    assert "\n" not in message and named in message and argv[-2] in message, message


def test_remote_stage1_inputs_that_exist_pass(s3) -> None:
    run = _prepare("--stage1-data", f"s3://{BUCKET}/in/photos", "--stage1-checkpoint",
                   f"s3://{BUCKET}/in/ckpt/vq.pckl")
    assert f"s3://{BUCKET}/in/ckpt/vq.pckl" in run.entrypoint  # passed on as a URI: the head fetches it


def test_a_stage1_checkpoint_uri_is_copied_once_into_the_node_cache(s3, tmp_path: Path) -> None:
    path = local_file(f"s3://{BUCKET}/in/ckpt/vq.pckl", tmp_path)
    assert Path(path).read_bytes() == b"not really a model" and str(tmp_path) in path
    Path(path).write_bytes(b"kept")  # a second call reuses the copy
    assert local_file(f"s3://{BUCKET}/in/ckpt/vq.pckl", tmp_path) == path and Path(path).read_bytes() == b"kept"
    with pytest.raises(FileNotFoundError, match="no such file"):
        local_file(f"s3://{BUCKET}/in/ckpt/none.pckl", tmp_path)
    assert local_file("/abs/vq.pckl", tmp_path) == "/abs/vq.pckl"


def test_stage1_data_uri_is_synced_where_stage1_trains(s3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dsr.config import preset
    from studies.runner.trial import RunSettings, stage1_images

    monkeypatch.setenv("DSR_DATA_CACHE", str(tmp_path / "cache"))
    settings = RunSettings(storage=str(tmp_path), experiment="x", categories=("bottle",),
                           stage1_data=f"s3://{BUCKET}/in/photos")
    images = stage1_images({"dataset": "mvtec", "data_root": "unused"}, preset("tiny"), settings)
    assert images.shape[0] == 1 and (tmp_path / "cache" / "s3" / BUCKET / "in" / "photos").is_dir()


def test_a_stage1_checkpoint_uri_stays_a_uri_and_a_path_becomes_absolute(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from studies.runner.tuner import _stage1_checkpoint

    monkeypatch.chdir(tmp_path)
    assert _stage1_checkpoint(f"s3://{BUCKET}/in/ckpt/vq.pckl") == f"s3://{BUCKET}/in/ckpt/vq.pckl"
    assert _stage1_checkpoint("vq.pckl") == str(tmp_path / "vq.pckl") and _stage1_checkpoint(None) is None
