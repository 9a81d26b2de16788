"""benchmarks/gpu.py in its CI size on the CPU: every measurement is printed and written."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gpu  # noqa: E402


def test_parse_picks_the_small_run_on_the_cpu():
    args = gpu.parse(["--device", "cpu"])
    assert args.small and args.preset == "tiny" and args.size == 64 and args.batches == [1, 4]
    full = gpu.parse(["--device", "cuda"])
    assert not full.small and full.preset == "paper" and full.size == 256 and full.batches == [1, 32]


@pytest.mark.slow
def test_ci_sized_run_prints_every_measurement(tmp_path, capsys):
    out = tmp_path / "gpu.json"
    assert gpu.main(["--device", "cpu", "--batches", "1", "--repeats", "1", "--train-steps", "1",
                     "--train-batch", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    for needle in ("SMALL CPU-sized run", "inference images/s", "bf16/fp32", "training step images/s",
                   "CPU proxy", "fp32 agreement with the CPU"):
        assert needle in text
    results = json.loads(out.read_text())
    assert set(results["inference"]) == {"fp32_b1", "bf16_b1"}
    assert set(results["training"]) == {"stage2_fp32", "stage2_bf16", "stage3_fp32", "stage3_bf16"}
    assert all(m["images_per_s"] > 0 and m["peak_gib"] > 0 for m in results["training"].values())
    assert results["agreement"] == {"maps": 0.0, "scores": 0.0}
