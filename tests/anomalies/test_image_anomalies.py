"""Image-space anomalies: texture paste (DSR_img) and stage-3 colour blobs."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dsr.anomalies import TextureSource, colour_blob_anomalies, synthesise_textures, texture_anomalies
from dsr.config import DSRConfig

CONFIG = DSRConfig(anomaly_probability=1.0)


def _grey(b: int = 8, size: int = 32) -> torch.Tensor:
    return torch.full((b, 3, size, size), 0.5)


def _assert_changed_where_masked(images: torch.Tensor, out: torch.Tensor, masks: torch.Tensor) -> None:
    assert out.shape == images.shape and masks.shape == (images.shape[0], 1, *images.shape[-2:])
    changed = (out != images).any(1, keepdim=True)
    assert not bool((changed & (masks == 0)).any()), "a pixel outside the mask changed"
    assert float(masks.sum()) > 0
    assert float((changed & (masks > 0)).sum()) >= 0.95 * float(masks.sum())


def test_texture_paste_changes_exactly_the_masked_pixels() -> None:
    images = _grey()
    out, masks = texture_anomalies(images, TextureSource(None, 32), torch.Generator().manual_seed(0), CONFIG)
    _assert_changed_where_masked(images, out, masks)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_no_anomaly_probability_leaves_images_untouched() -> None:
    images = _grey()
    config = DSRConfig(anomaly_probability=0.0)
    out, masks = texture_anomalies(images, TextureSource(None, 32), torch.Generator().manual_seed(0), config)
    assert torch.equal(out, images) and float(masks.sum()) == 0
    out, masks = colour_blob_anomalies(images, torch.Generator().manual_seed(0), config)
    assert torch.equal(out, images) and float(masks.sum()) == 0


def test_colour_blobs_blend_factor_is_below_the_config_max() -> None:
    """With images 0 and 1 and the same seed, out1 - out0 = beta inside the mask."""
    config = DSRConfig(anomaly_probability=1.0, stage3_blend_max=0.3)
    zeros, ones = torch.zeros(64, 3, 32, 32), torch.ones(64, 3, 32, 32)
    out0, masks = colour_blob_anomalies(zeros, torch.Generator().manual_seed(0), config)
    out1, masks1 = colour_blob_anomalies(ones, torch.Generator().manual_seed(0), config)
    assert torch.equal(masks, masks1)
    _assert_changed_where_masked(zeros, out0, masks)
    inside = masks.expand_as(out0) > 0
    beta = (out1 - out0)[inside]
    assert float(beta.min()) >= -1e-6 and float(beta.max()) < 0.3
    assert float(beta.max()) > 0.15  # the range is used, not collapsed to 0


def test_texture_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    (tmp_path / "sub").mkdir()
    Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(tmp_path / "sub" / "b.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    source = TextureSource(tmp_path, 16)
    assert len(source.paths) == 2 and not source.synthesised
    textures = source.sample(5, torch.Generator().manual_seed(0))
    assert textures.shape == (5, 3, 16, 16) and float(textures.min()) >= 0 and float(textures.max()) <= 1
    images = _grey(4, 16)
    out, masks = texture_anomalies(images, source, torch.Generator().manual_seed(0), CONFIG)
    _assert_changed_where_masked(images, out, masks)
    copy = pickle.loads(pickle.dumps(source))  # Ray ships it to workers
    assert torch.equal(copy.sample(5, torch.Generator().manual_seed(0)), textures)


def test_texture_folder_errors_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing"):
        TextureSource(tmp_path / "missing", 16)
    (tmp_path / "broken.png").write_text("not a png")
    with pytest.raises(ValueError, match=str(tmp_path)):
        TextureSource(tmp_path, 16)


def test_synthesised_textures_vary() -> None:
    textures = synthesise_textures(16, 32, torch.Generator().manual_seed(0))
    assert textures.shape == (16, 3, 32, 32)
    assert float(textures.min()) >= 0 and float(textures.max()) <= 1
    assert float(textures.flatten(1).std(1).min()) > 0.01  # every texture has structure
    assert float((textures[0] - textures[1]).abs().mean()) > 0.01


def test_reproducible() -> None:
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    a = texture_anomalies(images, TextureSource(None, 32), torch.Generator().manual_seed(1), CONFIG)
    b = texture_anomalies(images, TextureSource(None, 32), torch.Generator().manual_seed(1), CONFIG)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
