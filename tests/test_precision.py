"""precision "auto": resolution per device (CUDA capabilities injected), autocast dtypes, and the dtype of every
output of the stage-1/2/3 steps and of predict under each resolved precision (on the CPU)."""

import pytest
import torch

from dsr import DSR, preset
from dsr.anomalies import make_strategy
from dsr.config import PRECISIONS as CONFIG_PRECISIONS
from dsr.precision import PRECISIONS, autocast, autocast_dtype, resolve_device, resolve_precision, wants_tf32
from dsr.training.steps import TrainingData, stage1_step, stage2_step, stage3_step


def test_config_and_module_agree_on_precisions():
    assert CONFIG_PRECISIONS == PRECISIONS


@pytest.mark.parametrize("device, bf16, expected", [
    ("cpu", None, "fp32"), ("cpu", True, "fp32"), ("cuda", True, "bf16"), ("cuda:1", True, "bf16"),
    ("cuda", False, "fp32"),
])
def test_auto_resolves_by_device_and_capability(device, bf16, expected):
    assert resolve_precision("auto", device, bf16_supported=bf16) == expected


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_explicit_precisions_are_kept(precision, device):
    assert resolve_precision(precision, device, bf16_supported=False) == precision


def test_unknown_precision_names_the_option():
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp16", "cpu")


def test_autocast_dtype_and_tf32_choice():
    assert autocast_dtype("bf16") is torch.bfloat16 and autocast_dtype("fp32") is None
    assert wants_tf32("auto", "cuda") and not wants_tf32("auto", "cpu") and not wants_tf32("fp32", "cuda")


def test_device_choice_injected():
    assert resolve_device(cuda_available=True).type == "cuda"
    assert resolve_device(cuda_available=False).type == "cpu"
    assert resolve_device("cpu", cuda_available=True).type == "cpu"


def test_auto_on_the_cpu_is_a_disabled_autocast_and_leaves_tf32_alone():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with autocast("cpu", "auto"):
        assert not torch.is_autocast_enabled("cpu")
    with autocast("cpu", "bf16"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") is torch.bfloat16
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


def _tiny(precision):
    config = preset("tiny", precision=precision, batch_size=2, stage1_batch_size=2)
    torch.manual_seed(0)
    return DSR(config), TrainingData(torch.rand(3, 3, 64, 64))


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["auto", "fp32", "bf16"])
def test_every_step_output_and_prediction_is_fp32(precision):
    """Whatever autocast ran inside, losses, parts, gradients and predictions come back in fp32."""
    model, data = _tiny(precision)
    g = torch.Generator().manual_seed(0)
    loss, parts = stage1_step(model.train(), data, g, torch.device("cpu"))
    assert loss.dtype == torch.float32 and all(v.dtype == torch.float32 for v in parts.values())
    loss.backward()
    assert all(p.grad.dtype == torch.float32 for p in model.latent.parameters() if p.grad is not None)
    assert model.latent.quantizer_hi.codebook.dtype == torch.float32
    strategy = make_strategy(model.config)
    _, parts = stage2_step(model, data, g, torch.device("cpu"), strategy, None)
    assert all(v.dtype == torch.float64 and torch.isfinite(v) for v in parts.values())  # python floats summed
    assert all(p.grad.dtype == torch.float32 for p in model.object_decoder.parameters() if p.grad is not None)
    loss, parts = stage3_step(model, data, g, torch.device("cpu"))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    model.eval()
    scores, maps = model.predict(torch.rand(2, 3, 64, 64))
    assert scores.dtype == torch.float32 and maps.dtype == torch.float32 and maps.shape == (2, 64, 64)


def test_auto_on_the_cpu_is_exactly_fp32():
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    results = {}
    for precision in ("auto", "fp32"):
        model, data = _tiny(precision)
        loss, _ = stage1_step(model.train(), data, torch.Generator().manual_seed(0), torch.device("cpu"))
        results[precision] = (loss.detach(), *model.eval().predict(images))
    assert all(torch.equal(a, b) for a, b in zip(results["auto"], results["fp32"]))


def test_bf16_stage1_keeps_nearest_codes_in_fp32():
    """Under a bf16 autocast the quantiser still matches codes with fp32 distances (the same as outside)."""
    model, _ = _tiny("bf16")
    model.eval()  # no EMA update between the two matches
    z = torch.randn(2, model.config.embedding_dim, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = model.latent.quantizer_lo.quantize_indices(z)
        quantized = model.latent.quantizer_lo(z)
    assert torch.equal(inside, model.latent.quantizer_lo.quantize_indices(z))
    assert quantized.quantized.dtype == torch.float32 and torch.equal(quantized.indices, inside)
