"""studies.runner.storage against a real S3 API (moto's server on loopback): URIs, filesystems, datasets on nodes."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from s3_server import s3_server_in_environment

from studies.runner.storage import (
    SYNCED_MARKER,
    is_remote,
    is_uri,
    local_dataset,
    require_shared_storage,
    storage_filesystem,
)

BUCKET = "dsr-storage-test"


@pytest.fixture(scope="module")
def s3():
    with s3_server_in_environment() as server:
        server.create_bucket(BUCKET)
        yield server


def _dataset(root: Path) -> dict[str, bytes]:
    files = {"bottle/train/good/000.png": b"\x89PNG fake 0", "bottle/test/broken/001.png": b"\x89PNG fake 1",
             "bottle/ground_truth/broken/001_mask.png": os.urandom(3000)}
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    return files


@pytest.mark.parametrize(("text", "uri", "remote"), [
    ("s3://bucket/exp", True, True), ("gs://b/x", True, True), ("file:///tmp/x", True, False),
    ("/tmp/results", False, False), ("results", False, False), ("C:/x", False, False), ("s3:/x", False, False),
])
def test_uri_or_path(text: str, uri: bool, remote: bool) -> None:
    assert is_uri(text) is uri and is_remote(text) is remote


def test_plain_paths_open_as_absolute_local_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    filesystem, path = storage_filesystem("results/exp")
    assert isinstance(filesystem, pafs.LocalFileSystem) and path == str(tmp_path / "results" / "exp")


def test_s3_storage_goes_to_the_endpoint_in_the_environment(s3) -> None:
    filesystem, path = storage_filesystem(f"s3://{BUCKET}/exp")
    assert path == f"{BUCKET}/exp"
    with filesystem.open_output_stream(f"{path}/note.txt") as stream:
        stream.write(b"written through pyarrow")
    assert f"exp/note.txt" in s3.keys(BUCKET)  # the object is on the loopback server, not anywhere else


def test_unknown_scheme_is_one_line() -> None:
    with pytest.raises(ValueError, match="nosuch://x") as info:
        storage_filesystem("nosuch://x/y")
    assert "\n" not in str(info.value)


def test_s3_dataset_is_copied_once_and_checked(s3, tmp_path: Path) -> None:
    files = _dataset(tmp_path / "src")
    assert s3.upload_folder(tmp_path / "src", BUCKET, "datasets/mini") == len(files)
    cache = tmp_path / "cache"
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(local_dataset(f"s3://{BUCKET}/datasets/mini", cache)))
               for _ in range(4)]  # trials of one node asking at once: one copies, the others wait and reuse
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and len(set(results)) == 1
    local = Path(results[0])
    assert local.is_relative_to(cache) and (local / SYNCED_MARKER).is_file()
    for name, content in files.items():
        assert (local / name).read_bytes() == content
    assert not [p for p in local.parent.iterdir() if ".partial-" in p.name]
    (local / "bottle" / "train" / "good" / "000.png").write_bytes(b"changed locally")
    assert local_dataset(f"s3://{BUCKET}/datasets/mini", cache) == str(local)  # synced once: not copied again
    assert (local / "bottle" / "train" / "good" / "000.png").read_bytes() == b"changed locally"


def test_missing_or_empty_s3_dataset_is_one_line(s3, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"s3://{BUCKET}/datasets/none") as info:
        local_dataset(f"s3://{BUCKET}/datasets/none", tmp_path)
    assert "\n" not in str(info.value)
    with pytest.raises(FileNotFoundError, match="s3://no-such-bucket-dsr/x"):
        local_dataset("s3://no-such-bucket-dsr/x", tmp_path)
    assert not (tmp_path / "s3" / BUCKET / "datasets" / "none").exists()


def test_plain_dataset_path_is_used_as_is(tmp_path: Path) -> None:
    assert local_dataset(str(tmp_path / "mvtec")) == str(tmp_path / "mvtec")
    assert local_dataset(f"file://{tmp_path}/mvtec") == f"{tmp_path}/mvtec"


def test_shared_storage_check_passes_uris_without_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """A URI is reachable from every node by design: it passes without asking Ray about nodes, while a plain path
    does ask (on one node it then passes: nothing to compare)."""
    import ray

    asked = []
    monkeypatch.setattr(ray, "nodes", lambda: asked.append(True) or [{"Alive": True}])
    assert require_shared_storage("s3://bucket/exp") is None and asked == []
    assert require_shared_storage("/tmp/results") is None and asked == [True]


@pytest.mark.slow
def test_the_default_demo_is_built_on_a_node_that_lacks_the_drivers_copy(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A trial (stage 1 or main) on a node other than the driver's: the driver's demo path does not exist there,
    so the node builds its own copy into its cache; the stage-1 key stays the driver's."""
    from dsr.config import preset
    from dsr.data import list_categories
    from studies.runner.trial import RunSettings, local_trial, stage1_key

    monkeypatch.setenv("DSR_DATA_CACHE", str(tmp_path / "cache"))
    drivers = tmp_path / "laptop" / "dsr-studies" / "data" / "demo"  # only on the driver's machine
    trial = {"dataset": "demo", "data_root": str(drivers), "category": "brick", "preset": "tiny"}
    on_node = local_trial(trial)
    assert on_node["data_root"] == str(tmp_path / "cache" / "demo") and not drivers.exists()
    assert list_categories("demo", on_node["data_root"]) == ["brick", "grass", "gravel"]
    assert local_trial({**trial, "data_root": on_node["data_root"]}) == {**trial, "data_root": on_node["data_root"]}
    settings = RunSettings(storage=str(tmp_path / "s"), experiment="x", categories=("brick",))
    assert stage1_key(preset("tiny"), settings, trial).startswith("K")  # computed on the node, from the URI-like root
