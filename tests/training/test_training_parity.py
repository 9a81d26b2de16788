"""One training step of each stage equals the reference code's, given the same weights, batch and random draws.

`tests/fixtures/training_parity/` holds what the reference DSR code computed (its train_dsr.py functions, run by
make_fixtures.py there, in float64): the stage-1 EMA codebook update, and one stage-2 and one stage-3 step with
their injected randomness (masks, strengths, levels, replaced-code ranks, stage-3 colours and blend factors), loss
terms, gradients and Adam updates. Here our code replays the same draws and must give the same numbers. Both run
in float64, so the tolerances check the arithmetic (a real difference is orders of magnitude above them) and not
which convolution kernel a CPU picked; float32 runs check losses at 1e-5 relative and stage-2 gradients.
docs/training_parity.md lists the observed differences.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import pytest
import torch

from dsr import DSR, DSRConfig
from dsr.anomalies import BOTH, HI_ONLY, LO_ONLY, blend, feature_anomalies
from dsr.anomalies.feature import pool_mask
from dsr.anomalies.strategies.base import codes_at_ranks
from dsr.anomalies.strategies.similarity_bound import SimilarityBound
from dsr.checkpoints import _COMMON_RENAMES, _LATENT_RENAMES, _PER_CATEGORY_FILES, _rename, load_reference_checkpoints
from dsr.training.loop import freeze_for
from dsr.training.steps import stage1_loss, stage2_backward, stage3_loss

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "training_parity"
CATEGORY = "parity"
LATENT_STEM = "vq_model_pretrained_128_4096"
# reference file stem -> (our DSR attribute, key renames), as dsr.checkpoints imports them
MODULES = {LATENT_STEM: ("latent", _LATENT_RENAMES + _COMMON_RENAMES)}
MODULES.update({stem: (attribute, renames) for stem, attribute, renames in _PER_CATEGORY_FILES})

# float64 on both sides: observed differences are ~1e-15 relative (docs/training_parity.md); these bounds leave
# room for any CPU's summation order and stay far below what any real difference gives (>= 1e-7 relative).
LOSS_RTOL = 1e-10
GRAD_RTOL = 1e-8  # of the largest gradient magnitude of the same tensor
GRAD_ATOL = 1e-13  # gradients of weights are 1e-4..1 here
UPDATE_ATOL = 1e-10  # Adam moves each weight by about lr = 2e-4; stored as float32 (rounding ~2e-11)


def _load(name: str) -> dict:
    return torch.load(FIXTURES / f"{name}.pt", weights_only=True)


def _rule_tensor():
    """The weight rule, from the script that made the fixtures (one definition for both sides)."""
    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.rule_tensor


def _config(fixture: dict, **overrides) -> DSRConfig:
    w = fixture["widths"]
    return DSRConfig(image_size=w["image_size"], vq_hidden=w["vq_hidden"], vq_residual_hidden=w["vq_residual_hidden"],
                     vq_residual_layers=w["vq_residual_layers"], embedding_dim=w["embedding_dim"],
                     codebook_size=w["codebook_size"], restriction_width=w["embedding_dim"],
                     object_decoder_width=2 * w["embedding_dim"],
                     object_decoder_bottleneck=w["object_decoder_bottleneck"], unet_width=w["unet_width"],
                     batch_size=w["batch_size"], stage1_batch_size=w["batch_size"],
                     codebook_restart_threshold=0.0, **overrides)


def _model(fixture: dict, folder: Path, dtype: torch.dtype, **overrides) -> DSR:
    """Our DSR with the fixture's initial weights, imported from reference-format files like real checkpoints."""
    rule_tensor = _rule_tensor()
    for stem, keys in fixture["reference_keys"].items():
        state = {key: rule_tensor(stem, key, tuple(shape)) for key, shape in keys.items()}
        name = f"{stem}.pckl" if stem == LATENT_STEM else f"DSR_{stem}_{CATEGORY}.pckl"
        torch.save(state, folder / name)
    model = load_reference_checkpoints(DSR(_config(fixture, **overrides)), folder, CATEGORY)
    return model.to(dtype)


def _by_reference_key(model: DSR, stem: str) -> dict[str, torch.Tensor]:
    """Our tensors (parameters and buffers) of one module, named as the reference names them."""
    attribute, renames = MODULES[stem]
    ours = dict(getattr(model, attribute).state_dict(keep_vars=True))
    return {ref_key: ours[_rename(ref_key, renames)] for ref_key in _reference_keys(stem)}


@functools.cache
def _reference_keys(stem: str) -> list[str]:
    return list(_load("stage2")["reference_keys"][stem])


def _max_relative(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    scale = theirs.abs().max().item()
    return (ours.double() - theirs.double()).abs().max().item() / scale if scale > 0 else 0.0


def _assert_grads(model: DSR, expected: dict[str, dict[str, torch.Tensor]]) -> None:
    for stem, grads in expected.items():
        ours = _by_reference_key(model, stem)
        for key, grad in grads.items():
            mine = ours[key].grad
            assert mine is not None, f"{stem}/{key}: no gradient here, the reference has one"
            # biases in front of an InstanceNorm have a true gradient of 0: rounding noise (~1e-16) on both sides
            bound = GRAD_RTOL * grad.abs().max().item() + GRAD_ATOL
            assert (mine - grad).abs().max().item() <= bound, f"{stem}/{key}"


def _assert_updates(model: DSR, expected: dict[str, dict[str, torch.Tensor]], rule_tensor) -> None:
    for stem, updates in expected.items():
        ours = _by_reference_key(model, stem)
        for key, update in updates.items():
            initial = rule_tensor(stem, key, tuple(update.shape)).double()
            torch.testing.assert_close(ours[key].detach() - initial, update.double(), rtol=0, atol=UPDATE_ATOL,
                                       msg=lambda m: f"{stem}/{key}: {m}")


# --- stage 1: the EMA codebook update --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stage1(tmp_path_factory) -> tuple[dict, DSR, dict[str, torch.Tensor]]:
    fixture = _load("stage1")
    model = _model(fixture, tmp_path_factory.mktemp("stage1"), torch.float64)
    freeze_for(model, "stage1")
    seen = []
    model.latent.general_decoder.register_forward_hook(lambda module, inputs, output: seen.append(output.detach()))
    _, parts = stage1_loss(model, fixture["images"].double())  # training mode: the forward updates the codebooks
    return fixture, model, {**parts, "reconstruction": seen[0]}


def test_stage1_ema_update_equals_the_reference(stage1) -> None:
    fixture, model, _ = stage1
    ours = _by_reference_key(model, LATENT_STEM)
    for key, expected in fixture["ema_after"].items():
        # the update divides by Laplace-smoothed cluster sizes: float64 rounding stays ~1e-15 relative
        torch.testing.assert_close(ours[key].detach(), expected, rtol=1e-12, atol=1e-14, msg=lambda m: f"{key}: {m}")


def test_stage1_losses_and_reconstruction_equal_the_reference(stage1) -> None:
    fixture, model, parts = stage1
    expected = fixture["loss_commitment_lo"] + fixture["loss_commitment_hi"]
    assert parts["loss_commitment"].item() == pytest.approx(expected, rel=LOSS_RTOL)
    reconstruction = fixture["reconstruction"].double()  # stored as float32: rounding ~5e-9 at its scale 0.08
    torch.testing.assert_close(parts["reconstruction"], reconstruction, rtol=0, atol=1e-8)
    expected_mse = torch.nn.functional.mse_loss(reconstruction, fixture["images"].double()).item()
    assert parts["loss_reconstruction"].item() == pytest.approx(expected_mse, rel=1e-8)


# --- stage 2: feature-space anomalies, Eq. 3, one Adam step ----------------------------------------------------

class ReplayedSimilarityBound(SimilarityBound):
    """The paper's strategy with the reference's draws: its strengths, and per position its rank offset inside
    the window, so the codes are chosen by our ranking of our distances. Records the windows it used."""

    def __init__(self, config: DSRConfig, draws: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        super().__init__(config)
        self.draws = list(draws)
        self.windows: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._offsets = torch.empty(0, dtype=torch.long)

    def strengths(self, num_images, generator, device="cpu"):
        strengths, self._offsets = self.draws.pop(0)
        return strengths.to(device)

    def rank_windows(self, codebook_size, num_images, generator, device="cpu"):
        low, high = super().rank_windows(codebook_size, num_images, generator, device)
        self.windows.append((low, high))
        return low, high

    def draw(self, z, codebook, low, high, generator):
        rank = low + self._offsets
        assert bool((rank < high).all()), "a reference rank lies outside our window"
        distances = torch.cat([d for _, d in self.distance_chunks(z, codebook)])
        return codes_at_ranks(distances, rank)


def _levels(fixture: dict) -> torch.Tensor:
    both, lo = fixture["use_both"].bool(), fixture["use_lo"].bool()
    return torch.where(both, BOTH, torch.where(lo, LO_ONLY, HI_ONLY)).long()


def _replayed_draws(fixture: dict, mask: torch.Tensor, levels: torch.Tensor, h_lo: int, h_hi: int):
    """The reference's strengths and the rank offsets at the positions our perturbation replaces, in its order."""
    where_lo = (pool_mask(mask, (h_lo, h_lo))[:, 0] > 0) & (levels != HI_ONLY)[:, None, None]
    where_hi = (pool_mask(mask, (h_hi, h_hi))[:, 0] > 0) & (levels != LO_ONLY)[:, None, None]
    offsets_hi = torch.where((levels == BOTH)[:, None, None], fixture["rank_offsets_hi_both"],
                             fixture["rank_offsets_hi_only"])
    return [(fixture["strength_lo"], fixture["rank_offsets_lo"][where_lo]),
            (fixture["strength_hi"], offsets_hi[where_hi])]


def _stage2(fixture: dict, folder: Path, dtype: torch.dtype):
    model = _model(fixture, folder, dtype, similarity_bound=fixture["similarity_bound"], stage2_lr=fixture["lr"])
    optimizer = torch.optim.Adam(freeze_for(model, "stage2"), lr=model.config.stage2_lr)
    images, mask = fixture["images"].to(dtype), fixture["masks"].to(dtype)
    levels = _levels(fixture)
    w = fixture["widths"]
    strategy = ReplayedSimilarityBound(model.config, _replayed_draws(fixture, mask, levels, w["image_size"] // 8,
                                                                     w["image_size"] // 4))
    with torch.no_grad():
        clean = model.latent.encode(images)
        anomalies = feature_anomalies(model.latent, clean, mask, strategy, model.config, torch.Generator(), levels)
    optimizer.zero_grad(set_to_none=True)
    parts = stage2_backward(model, images, clean, anomalies.q_hi, anomalies.q_lo, anomalies.mask)
    grads_before_step = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    optimizer.step()
    return model, strategy, anomalies, parts, grads_before_step


@pytest.fixture(scope="module")
def stage2(tmp_path_factory):
    fixture = _load("stage2")
    return (fixture, *_stage2(fixture, tmp_path_factory.mktemp("stage2"), torch.float64))


def test_stage2_rank_windows_equal_the_reference(stage2) -> None:
    """Window widths per image and level, including s near 1, where the reference caps the window at K - 1."""
    fixture, _, strategy, *_ = stage2
    (low_lo, high_lo), (low_hi, high_hi) = strategy.windows
    assert bool((low_lo == fixture["excluded_ranks"]).all()) and bool((low_hi == fixture["excluded_ranks"]).all())
    assert (high_lo - low_lo).tolist() == fixture["window_lo"].tolist()
    assert (high_hi - low_hi).tolist() == fixture["window_hi_both"].tolist() == fixture["window_hi_only"].tolist()


def test_stage2_anomalous_features_and_mask_equal_the_reference(stage2) -> None:
    fixture, _, _, anomalies, *_ = stage2
    # Same codes chosen everywhere: a different code would differ by ~0.1, these are rounding (~1e-16)
    torch.testing.assert_close(anomalies.q_lo, fixture["anomalous_q_lo"], rtol=0, atol=1e-12)
    torch.testing.assert_close(anomalies.q_hi, fixture["anomalous_q_hi"], rtol=0, atol=1e-12)
    assert torch.equal(anomalies.mask.bool(), fixture["truth_mask"])


def test_stage2_losses_equal_the_reference(stage2) -> None:
    fixture, _, _, _, parts, _ = stage2
    assert parts["loss_focal"].item() == pytest.approx(fixture["loss_focal"], rel=LOSS_RTOL)
    feature = fixture["loss_feature_hi"] + fixture["loss_feature_lo"]
    assert parts["loss_feature"].item() == pytest.approx(feature, rel=LOSS_RTOL)
    assert parts["loss_image"].item() == pytest.approx(fixture["loss_image"], rel=LOSS_RTOL)


def test_stage2_gradients_equal_the_reference(stage2) -> None:
    fixture, model, *_ = stage2
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    assert len(trained) == sum(len(g) for g in fixture["grads"].values()), "another set of trained tensors"
    _assert_grads(model, fixture["grads"])


def test_stage2_adam_update_equals_the_reference(stage2) -> None:
    fixture, model, *_ = stage2
    _assert_updates(model, fixture["update"], _rule_tensor())


# --- stage 3: colour-blob image anomalies, the upsampling module, one Adam step ---------------------------------

def test_stage3_image_anomalies_equal_the_reference() -> None:
    """The reference's augment_image for the same mask, colour and beta is our blend (float32 like the loader);
    a sample whose anomaly is dropped keeps its image and gets an empty mask."""
    fixture = _load("stage3")
    keep = ~fixture["no_anomaly"]
    masks = fixture["masks"].float() * keep[:, None, None, None].float()
    colours = fixture["colours"].float()[:, :, None, None].expand_as(fixture["images"])
    ours = blend(fixture["images"], colours, masks, fixture["beta"])
    assert torch.equal(masks.bool(), fixture["truth_mask"])
    torch.testing.assert_close(ours, fixture["augmented"], rtol=0, atol=1e-6)
    assert torch.equal(ours[~keep], fixture["images"][~keep])


@pytest.fixture(scope="module")
def stage3(tmp_path_factory):
    fixture = _load("stage3")
    model = _model(fixture, tmp_path_factory.mktemp("stage3"), torch.float64, stage3_lr=fixture["lr"])
    optimizer = torch.optim.Adam(freeze_for(model, "stage3"), lr=model.config.stage3_lr)
    optimizer.zero_grad(set_to_none=True)
    loss, _ = stage3_loss(model, fixture["augmented"].double(), fixture["truth_mask"].double())
    loss.backward()
    optimizer.step()
    return fixture, model, loss


def test_stage3_loss_equals_the_reference(stage3) -> None:
    fixture, _, loss = stage3
    assert loss.item() == pytest.approx(fixture["loss_focal"], rel=LOSS_RTOL)


def test_stage3_gradients_and_update_equal_the_reference(stage3) -> None:
    fixture, model, _ = stage3
    trained = [name for name, p in model.named_parameters() if p.requires_grad]
    assert all(name.startswith("upsampling.") for name in trained) and len(trained) == len(fixture["grads"])
    _assert_grads(model, {"upsample_module": fixture["grads"]})
    _assert_updates(model, {"upsample_module": fixture["update"]}, _rule_tensor())


# --- float32, as training runs -----------------------------------------------------------------------------------

def test_stage2_in_float32_within_fp32_tolerance_of_the_reference(tmp_path) -> None:
    """Our float32 step against the float64 reference: the same codes are chosen, every loss term is within 1e-5
    relative (observed <= 1.1e-7) and every gradient within 1e-3 of its tensor's largest (observed 1.1e-5)."""
    fixture = _load("stage2")
    model, _, anomalies, parts, _ = _stage2(fixture, tmp_path, torch.float32)
    torch.testing.assert_close(anomalies.q_lo.double(), fixture["anomalous_q_lo"], rtol=0, atol=1e-5)
    torch.testing.assert_close(anomalies.q_hi.double(), fixture["anomalous_q_hi"], rtol=0, atol=1e-5)
    assert parts["loss_focal"].item() == pytest.approx(fixture["loss_focal"], rel=1e-5)
    feature = fixture["loss_feature_hi"] + fixture["loss_feature_lo"]
    assert parts["loss_feature"].item() == pytest.approx(feature, rel=1e-5)
    assert parts["loss_image"].item() == pytest.approx(fixture["loss_image"], rel=1e-5)
    # Gradients before the Adam step (the step itself is not compared in float32: the true-zero bias gradients
    # are float32 rounding noise, ~1e-7, and Adam's first step turns any non-zero gradient into +-lr).
    largest = max(g.abs().max().item() for grads in fixture["grads"].values() for g in grads.values())
    for stem, grads in fixture["grads"].items():
        ours = _by_reference_key(model, stem)
        for key, grad in grads.items():
            bound = 1e-3 * grad.abs().max().item() + 1e-5 * largest
            assert (ours[key].grad.double() - grad).abs().max().item() <= bound, f"{stem}/{key}"


def test_stage3_loss_in_float32_within_1e5_of_the_reference(tmp_path) -> None:
    """Only the loss: float32 gradients of this tiny random-weight UNet differ from float64 by up to ~1% on some
    encoder weights (InstanceNorm over 8x8 maps), ours and the reference's alike (docs/training_parity.md)."""
    fixture = _load("stage3")
    model = _model(fixture, tmp_path, torch.float32)
    freeze_for(model, "stage3")
    with torch.no_grad():
        loss, _ = stage3_loss(model, fixture["augmented"], fixture["truth_mask"].float())
    assert loss.item() == pytest.approx(fixture["loss_focal"], rel=1e-5)


# --- the seams the replay uses ------------------------------------------------------------------------------------

def test_similarity_bound_window_stops_before_the_farthest_code() -> None:
    """As the reference (top-k count capped at K - 1): s near 1 never reaches rank K - 1; tiny s keeps one rank."""
    strategy = SimilarityBound(DSRConfig(similarity_bound=0.2))
    low, high = strategy.windows_for(torch.tensor([0.2, 0.5, 62.5 / 64, 0.9999], dtype=torch.float64), 64)
    assert low.tolist() == [3] * 4 and high.tolist() == [13, 33, 63, 63]
    low, high = SimilarityBound(DSRConfig(similarity_bound=0.01)).windows_for(torch.tensor([0.01]).double(), 64)
    assert (low.item(), high.item()) == (3, 4)


def test_feature_anomalies_rejects_bad_levels() -> None:
    config = DSRConfig(image_size=64, vq_hidden=8, vq_residual_hidden=4, embedding_dim=4, codebook_size=8)
    model = DSR(config).eval()
    with torch.no_grad():
        encoding = model.latent.encode(torch.rand(2, 3, 64, 64))
    for levels in (torch.tensor([0, 3]), torch.tensor([0, 1, 2])):
        with pytest.raises(ValueError, match="levels must be"):
            feature_anomalies(model.latent, encoding, torch.ones(2, 1, 64, 64), SimilarityBound(config), config,
                              torch.Generator(), levels)
