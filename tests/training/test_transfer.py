"""Pinned host memory for CUDA copies (the decision, testable on the CPU) and anomalies on the images' device."""

import torch

from dsr import preset
from dsr.anomalies import _random, colour_blob_anomalies, perlin_masks, random_rotation, rotate
from dsr.training.steps import TrainingData
from dsr.training.transfer import gather_to, should_pin


def test_pinning_only_for_a_cpu_source_and_a_cuda_target():
    host = torch.zeros(2, 3)
    assert should_pin(host, "cuda", cuda_available=True)
    assert should_pin(host, "cuda:0", cuda_available=True)
    assert not should_pin(host, "cuda", cuda_available=False)
    assert not should_pin(host, "cpu", cuda_available=True)
    assert _random.pinned_draw(torch.device("cpu"), "cuda", cuda_available=True)
    assert not _random.pinned_draw(torch.device("cpu"), "cpu", cuda_available=True)


def test_gather_on_the_cpu_is_a_plain_index_and_unpinned():
    source = torch.arange(5 * 3 * 2 * 2, dtype=torch.float32).view(5, 3, 2, 2)
    index = torch.tensor([4, 0, 4])
    out = gather_to(source, index, "cpu")
    assert torch.equal(out, source[index]) and not out.is_pinned()


def test_batches_are_the_seeded_rows():
    data = TrainingData(torch.rand(7, 3, 4, 4))
    batch = data.batch(5, torch.Generator().manual_seed(2), torch.device("cpu"))
    index = torch.randint(7, (5,), generator=torch.Generator().manual_seed(2))
    assert torch.equal(batch, data.normal[index])


def test_rotation_picks_match_the_boolean_mask_reference():
    """The CPU-side picks give the same rotated images as the former on-device boolean mask, for a fixed seed."""
    images = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    out = random_rotation(images, 0.5, 90.0, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    picked = torch.rand(8, generator=g) < 0.5
    degrees = (torch.rand(8, generator=g) * 2.0 - 1.0) * 90.0
    expected = images.clone()
    expected[picked] = rotate(images[picked], degrees[picked])
    assert 0 < int(picked.sum()) < 8 and torch.equal(out, expected)


def test_anomalies_are_created_on_the_images_device_and_dtype():
    config = preset("tiny")
    images = torch.rand(4, 3, 32, 32, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    anomalous, masks = colour_blob_anomalies(images, g, config)
    assert anomalous.device == images.device and anomalous.dtype == torch.float64 and masks.shape == (4, 1, 32, 32)
    assert perlin_masks(3, 32, g, config, images.device).device == images.device
