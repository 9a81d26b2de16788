"""The shared stage-1 store and the data fingerprint behind stage-1 keys (in process, no Ray)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

from dsr.config import preset
from dsr.model import DSR
from studies.runner import stage1
from studies.runner.trial import RunSettings, data_fingerprint

POINT = {"study": "ablation", "preset": "tiny", "variant": "DSR", "dataset": "demo", "category": "brick", "seed": 0,
         "overrides": {}}


def _settings(storage: Path, experiment: str) -> RunSettings:
    return RunSettings(storage=str(storage), experiment=experiment, categories=("brick",))


def _store(storage: Path, key: str, payload: bytes) -> Path:
    path = storage / stage1.STORE / key / stage1.LATENT_FILE
    path.parent.mkdir(parents=True)
    path.write_bytes(payload)
    return path


def _latent_bytes(**overrides) -> bytes:
    buffer = io.BytesIO()
    torch.save(DSR(preset("tiny", **overrides)).latent.state_dict(), buffer)
    return buffer.getvalue()


def test_a_published_model_is_reused_by_the_next_experiment(tmp_path: Path) -> None:
    first, second = _settings(tmp_path, "first"), _settings(tmp_path, "second")
    latent = DSR(preset("tiny")).latent.state_dict()
    stage1.write_latent(first, "K1", latent)
    stage1.publish(first, "K1")
    assert (tmp_path / stage1.STORE / "K1" / stage1.LATENT_FILE).is_file()
    assert stage1.reuse_stored(second, {"K1": POINT, "K2": POINT}, ["K1", "K2"]) == ["K1"]  # K2: not in the store
    loaded = stage1.load_latent(second, "K1")
    assert loaded.keys() == latent.keys() and all(torch.equal(loaded[k], latent[k]) for k in latent)
    reused = json.loads((tmp_path / "second" / stage1.PHASE / "K1" / stage1.REUSED_FILE).read_text())
    assert reused == {"from": f"{stage1.STORE}/K1/{stage1.LATENT_FILE}"}
    stage1.publish(second, "K1")  # a reused model is not published again (it came from there)
    assert not list((tmp_path / stage1.STORE).glob("*/*.partial"))


@pytest.mark.parametrize("payload", [b"not a torch file", _latent_bytes(codebook_size=8)], ids=["corrupt", "other-K"])
def test_a_stored_model_that_does_not_load_or_fit_is_never_used(tmp_path: Path, payload: bytes,
                                                                capsys: pytest.CaptureFixture) -> None:
    _store(tmp_path, "K1", payload)
    settings = _settings(tmp_path, "exp")
    assert stage1.reuse_stored(settings, {"K1": POINT}, ["K1"]) == []
    assert not stage1.has_latent(settings, "K1")
    assert "stage 1 K1: the stored model in stage1_store/ is not usable" in capsys.readouterr().out


def test_the_fingerprint_follows_the_data_not_its_place(tmp_path: Path) -> None:
    for root in (tmp_path / "a", tmp_path / "b"):
        (root / "brick" / "train" / "good").mkdir(parents=True)
        (root / "brick" / "train" / "good" / "000.png").write_bytes(b"x" * 10)
    (tmp_path / "b" / ".dsr_synced").write_text("a node cache's marker")  # not data
    assert data_fingerprint(tmp_path / "a") == data_fingerprint(tmp_path / "b")
    (tmp_path / "b" / "brick" / "train" / "good" / "000.png").write_bytes(b"x" * 11)
    assert data_fingerprint(tmp_path / "a") != data_fingerprint(tmp_path / "b")
    before = data_fingerprint(tmp_path / "a")
    (tmp_path / "a" / ".dsr_split.json").write_text("{}")  # a flat folder's saved split decides the train set
    assert data_fingerprint(tmp_path / "a") != before


def test_planning_walks_each_data_root_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keying a grid of configurations fingerprints each data root once, and still tells roots apart."""
    from studies.runner import trial as trial_module

    walked: list[str] = []
    real = trial_module.data_fingerprint
    monkeypatch.setattr(trial_module, "data_fingerprint", lambda root: walked.append(str(root)) or real(root))
    for name, size in (("a", 10), ("b", 11)):
        (tmp_path / name / "brick" / "train" / "good").mkdir(parents=True)
        (tmp_path / name / "brick" / "train" / "good" / "000.png").write_bytes(b"x" * size)
    points = [{**POINT, "dataset": "mvtec", "data_root": str(tmp_path / root), "seed": seed, "variant": variant}
              for root in ("a", "b") for seed in (0, 1) for variant in ("DSR", "DSR_random")]
    jobs = stage1.plan(points, _settings(tmp_path, "grid"))
    assert sorted(walked) == [str(tmp_path / "a"), str(tmp_path / "b")]
    assert len(jobs) == 4  # two roots x two seeds: the variant is a stage-2 choice


@pytest.mark.parametrize("models, node_cpus, expected", [
    (1, [2.0], 2.0),  # the default study on a 2-core laptop: its one stage 1 takes both cores
    (1, [16.0], 16.0),
    (3, [2.0], 1.0),  # more models than cores: each keeps a main trial's share
    (2, [5.0], 2.0),  # shares are whole CPUs
    (1, [4.0, 4.0], 4.0),  # a trial runs on one node: at most one node's CPUs
    (3, [4.0, 4.0], 2.0),
    (1, [0.0], 1.0),  # a head without CPUs for trials (its workers not up yet): never below the trials' share
])
def test_a_cpu_phase_shares_the_clusters_cpus_among_its_models(models: int, node_cpus: list[float],
                                                                expected: float) -> None:
    assert stage1.phase_cpus(models, 1.0, 0.0, 0.0, node_cpus) == expected


def test_a_given_stage1_cpus_or_a_gpu_phase_keeps_its_share() -> None:
    assert stage1.phase_cpus(1, 1.0, 0.0, 1.0, [8.0]) == 1.0  # --stage1-cpus 1: the old behaviour, on request
    assert stage1.phase_cpus(1, 1.0, 0.0, 3.0, [8.0]) == 3.0
    assert stage1.phase_cpus(1, 4.0, 1.0, 0.0, [8.0]) == 4.0  # GPU trials: the GPU does the work
    assert stage1.phase_cpus(1, 2.0, 0.0, 0.0, [8.0, 1.0]) == 8.0
