"""Reference checkpoint import (names, shapes, errors) and this project's own checkpoint round trip."""

import re
from pathlib import Path

import pytest
import torch

from dsr import DSR, DSRConfig, preset
from dsr.checkpoints import (load_checkpoint, load_reference_checkpoints, load_stage1_checkpoint,
                             reference_checkpoint_paths, save_checkpoint)

KEYS_FILE = Path(__file__).parent / "fixtures" / "official_checkpoint_keys.txt"
SECTION_FILES = {  # section name in the keys file -> reference file stems it describes
    "vq_model": ["vq_model_pretrained_128_4096"],
    "subspace_restriction_{hi,lo}": ["DSR_subspace_restriction_hi_bottle", "DSR_subspace_restriction_lo_bottle"],
    "image_recon_module": ["DSR_image_recon_module_bottle"],
    "anomaly_det_module": ["DSR_anomaly_det_module_bottle"],
    "upsample_module": ["DSR_upsample_module_bottle"],
}


def parse_reference_keys() -> dict[str, dict[str, tuple[int, ...]]]:
    sections: dict[str, dict[str, tuple[int, ...]]] = {}
    current = None
    for line in KEYS_FILE.read_text().splitlines():
        if line.startswith("### "):
            current = line[4:].split(" ")[0]
            sections[current] = {}
        elif line.strip():
            name, shape = line.split(" ", 1)
            sections[current][name] = tuple(int(n) for n in re.findall(r"\d+", shape))
    return sections


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory) -> Path:
    """Reference-format files with random tensors, named and shaped as in official_checkpoint_keys.txt."""
    directory = tmp_path_factory.mktemp("reference")
    generator = torch.Generator().manual_seed(1)
    for section, keys in parse_reference_keys().items():
        for stem in SECTION_FILES[section]:
            state = {name: torch.randn(shape, generator=generator) for name, shape in keys.items()}
            torch.save(state, directory / f"{stem}.pckl")
    return directory


@pytest.fixture(scope="module")
def paper_model() -> DSR:
    return DSR(DSRConfig())


def test_reference_import_puts_every_tensor_in_its_module(reference_dir: Path, paper_model: DSR) -> None:
    load_reference_checkpoints(paper_model, reference_dir, "bottle")
    latent = torch.load(reference_dir / "vq_model_pretrained_128_4096.pckl", weights_only=True)
    torch.testing.assert_close(paper_model.latent.quantizer_hi.codebook, latent["_vq_vae_bot._embedding.weight"])
    torch.testing.assert_close(paper_model.latent.quantizer_lo.ema_weight, latent["_vq_vae_top._ema_w"])
    torch.testing.assert_close(paper_model.latent.encoder_hi.conv1.weight, latent["_encoder_b._conv_1.weight"])
    torch.testing.assert_close(paper_model.latent.upsample_lo.weight, latent["upsample_t.weight"])
    torch.testing.assert_close(paper_model.latent.general_decoder.residual_stack.layers[1].block[3].weight,
                               latent["_decoder_b._residual_stack._layers.1._block.3.weight"])
    recon = torch.load(reference_dir / "DSR_image_recon_module_bottle.pckl", weights_only=True)
    torch.testing.assert_close(paper_model.object_decoder.bottleneck.weight, recon["pre_vq_conv.weight"])
    torch.testing.assert_close(paper_model.object_decoder.tail.deconv2.bias, recon["_conv_trans_2.bias"])
    lo = torch.load(reference_dir / "DSR_subspace_restriction_lo_bottle.pckl", weights_only=True)
    torch.testing.assert_close(paper_model.restriction_lo.decoder.up3[1].weight, lo["unet.decoder.up3.1.weight"])
    hi = torch.load(reference_dir / "DSR_subspace_restriction_hi_bottle.pckl", weights_only=True)
    torch.testing.assert_close(paper_model.restriction_hi.encoder.block2[3].weight, hi["unet.encoder.block2.3.weight"])
    upsample = torch.load(reference_dir / "DSR_upsample_module_bottle.pckl", weights_only=True)
    torch.testing.assert_close(paper_model.upsampling.encoder.block1[0].weight, upsample["unet.encoder.block1.0.weight"])
    # every reference tensor landed somewhere: the model's state equals the union of the files, value for value
    total_reference = sum(t.numel() for p in reference_dir.glob("*.pckl")
                          for t in torch.load(p, weights_only=True).values())
    assert total_reference == sum(t.numel() for t in paper_model.state_dict().values())


def _rewrite(src: Path, dst_dir: Path, change) -> Path:
    for path in src.glob("*.pckl"):
        (dst_dir / path.name).write_bytes(path.read_bytes())
    target = dst_dir / "DSR_anomaly_det_module_bottle.pckl"
    state = torch.load(target, weights_only=True)
    change(state)
    torch.save(state, target)
    return target


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s.pop("unet.decoder.db2.3.bias"), r"missing tensor\(s\) for decoder\.db2\.3\.bias"),
        (lambda s: s.__setitem__("unet.extra.weight", torch.zeros(1)), r"unexpected tensor\(s\) unet\.extra\.weight"),
        (lambda s: s.__setitem__("unet.encoder.block1.0.weight", torch.zeros(64, 5, 3, 3)),
         r"tensor unet\.encoder\.block1\.0\.weight has shape \(64, 5, 3, 3\)"),
    ],
)
def test_bad_reference_files_name_file_and_tensor(reference_dir, paper_model, tmp_path, change, message) -> None:
    target = _rewrite(reference_dir, tmp_path, change)
    before = paper_model.anomaly_detection.encoder.block1[0].weight.clone()
    with pytest.raises(ValueError, match=message) as error:
        load_reference_checkpoints(paper_model, tmp_path, "bottle")
    assert str(target) in str(error.value)
    assert torch.equal(before, paper_model.anomaly_detection.encoder.block1[0].weight)  # nothing half-loaded


def test_missing_and_corrupt_reference_files(reference_dir, paper_model, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="DSR_upsample_module_carpet.pckl"):
        load_reference_checkpoints(paper_model, reference_dir, "carpet")
    for path in reference_dir.glob("*.pckl"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    corrupt = tmp_path / "vq_model_pretrained_128_4096.pckl"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="vq_model_pretrained_128_4096.pckl: not a readable checkpoint"):
        load_reference_checkpoints(paper_model, tmp_path, "bottle")
    assert set(reference_checkpoint_paths(tmp_path, "bottle", prefix="X")["upsampling"].name.split("_")) >= {"X"}


def test_own_checkpoint_round_trip(tmp_path: Path) -> None:
    config = preset("tiny", similarity_bound=0.05, sampling_params={"temperature": 0.5})
    model = DSR(config).eval()
    path = save_checkpoint(model, tmp_path / "model.pt")
    restored = load_checkpoint(path).eval()
    assert restored.config == config
    images = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(model.predict(images).pixel_maps, restored.predict(images).pixel_maps)
    (tmp_path / "other.pt").write_bytes(b"junk")
    with pytest.raises(Exception, match="other.pt"):
        load_checkpoint(tmp_path / "other.pt")


def test_stage1_checkpoint_reads_the_reference_vq_file_ours_and_a_whole_model(reference_dir: Path,
                                                                               tmp_path: Path) -> None:
    """--stage1-checkpoint's loader: the reference's ImageNet VQ file, a study's latent.pt and a whole-model
    checkpoint all give the same latent model as the reference import; a config that does not fit is refused."""
    expected = load_reference_checkpoints(DSR(DSRConfig()), reference_dir, "bottle").latent.state_dict()
    from_reference = load_stage1_checkpoint(DSR(DSRConfig()).latent,
                                            reference_dir / "vq_model_pretrained_128_4096.pckl")
    torch.save(from_reference.state_dict(), tmp_path / "latent.pt")
    whole = DSR(DSRConfig())
    whole.latent.load_state_dict(expected)
    save_checkpoint(whole, tmp_path / "model.pt")
    for source in (tmp_path / "latent.pt", tmp_path / "model.pt"):
        loaded = load_stage1_checkpoint(DSR(DSRConfig()).latent, source).state_dict()
        assert all(torch.equal(loaded[k], expected[k]) for k in expected), source
    assert all(torch.equal(from_reference.state_dict()[k], expected[k]) for k in expected)
    with pytest.raises(ValueError, match=r"vq_model_pretrained_128_4096.pckl: tensor .* has shape"):
        load_stage1_checkpoint(DSR(DSRConfig(codebook_size=512)).latent,
                               reference_dir / "vq_model_pretrained_128_4096.pckl")
    torch.save({"not": "tensors"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt: not a stage-1 checkpoint"):
        load_stage1_checkpoint(DSR(DSRConfig()).latent, tmp_path / "other.pt")
