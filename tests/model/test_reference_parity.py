"""Imported reference weights give the reference code's own outputs, stage by stage.

`tests/fixtures/reference_outputs.pt` holds what the reference DSR code computed on one fixed input with
deterministic weights (from ../shared/reference/parity/). The weights follow a rule that depends only on each
tensor's file stem, key and shape, so this test writes the same files itself from the keys listing.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import pytest
import torch

from dsr import DSR, DSRConfig
from dsr.checkpoints import load_reference_checkpoints
from test_checkpoints import SECTION_FILES, parse_reference_keys  # noqa: I001  (tests/ is on sys.path)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CATEGORY = "bottle"


def rule_tensor(stem: str, key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The parity fixture's weight rule: a generator seeded by crc32("<stem>/<key>"), scaled by the tensor's role."""
    generator = torch.Generator().manual_seed(zlib.crc32(f"{stem}/{key}".encode()))
    if key.endswith("_ema_cluster_size"):
        return torch.rand(shape, generator=generator) + 0.5
    if key.endswith("_embedding.weight") or key.endswith("_ema_w"):
        return torch.randn(shape, generator=generator) * 0.1
    if len(shape) == 1:
        return torch.randn(shape, generator=generator) * 0.01
    return torch.randn(shape, generator=generator) / math.sqrt(math.prod(shape[1:]))


def rule_stem(file_stem: str) -> str:
    """The rule's stem: the reference file name without the DSR_ prefix and the category suffix."""
    return file_stem.removeprefix("DSR_").removesuffix(f"_{CATEGORY}")


@pytest.fixture(scope="module")
def expected() -> dict[str, torch.Tensor]:
    return torch.load(FIXTURES / "reference_outputs.pt", weights_only=True)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> DSR:
    folder = tmp_path_factory.mktemp("parity_weights")
    for section, keys in parse_reference_keys().items():
        for file_stem in SECTION_FILES[section]:
            state = {key: rule_tensor(rule_stem(file_stem), key, shape) for key, shape in keys.items()}
            torch.save(state, folder / f"{file_stem}.pckl")
    return load_reference_checkpoints(DSR(DSRConfig(channel_order="bgr")), folder, CATEGORY).eval()


@pytest.fixture(scope="module")
def outputs(model: DSR, expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every stage of our model on the fixture's input, fp32, one image per pass as the reference's test runs."""
    images = expected["input"]
    with torch.inference_mode():
        encoding = model.latent.encode(images)
        codes_lo = model.latent.quantizer_lo.quantize_indices(encoding.z_lo)
        codes_hi = model.latent.quantizer_hi.quantize_indices(encoding.z_hi)
        out = model(encoding.q_hi, encoding.q_lo, precision="fp32")
        prediction = model.predict(images, precision="fp32")
    return {
        "codes_lo": codes_lo.reshape(expected["codes_lo"].shape),
        "codes_hi": codes_hi.reshape(expected["codes_hi"].shape),
        "general_image": out.general_image,
        "object_image": out.object_image,
        "detection_probability": torch.softmax(out.detection_logits, dim=1)[:, 1],
        "image_scores": prediction.image_scores,
        "pixel_maps": prediction.pixel_maps,
    }


@pytest.mark.parametrize("level", ["codes_lo", "codes_hi"])
def test_chosen_codes_equal_the_reference(outputs, expected, level: str) -> None:
    ours, theirs = outputs[level].long(), expected[level].long()
    mismatched = (ours != theirs).float().mean().item()
    assert mismatched == 0.0, f"{level}: {mismatched:.2%} of positions chose another code"


@pytest.mark.parametrize("name", ["general_image", "object_image", "detection_probability", "pixel_maps"])
def test_images_and_maps_within_1e3_of_the_reference(outputs, expected, name: str) -> None:
    # Tolerance: float32 convolutions in another summation order (batching, CPU kernel) move these by ~1e-5..2e-4.
    torch.testing.assert_close(outputs[name], expected[name], rtol=0.0, atol=1e-3)


def test_image_scores_within_1e4_of_the_reference(outputs, expected) -> None:
    torch.testing.assert_close(outputs["image_scores"], expected["image_scores"], rtol=0.0, atol=1e-4)
