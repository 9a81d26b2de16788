import pytest
import torch

from dsr import DSR, DSRConfig, parameter_counts, preset

SPEC_COUNTS = {  # DSR_SPEC.md, exact for the reference
    "discrete_latent_model": 4_021_379,
    "subspace_restriction_hi": 7_818_240,
    "subspace_restriction_lo": 7_818_240,
    "object_decoder": 9_418_371,
    "anomaly_detection": 5_610_690,
    "upsampling": 5_611_842,
}


def test_default_parameter_counts_equal_the_spec() -> None:
    counts = parameter_counts(DSR(DSRConfig()))
    assert counts == SPEC_COUNTS
    assert sum(counts.values()) == 40_298_762


@pytest.mark.parametrize("name", [pytest.param("paper", marks=pytest.mark.slow), "small", "tiny"])  # paper: 20 s
def test_shapes_through_every_module(name: str) -> None:
    config = preset(name)
    model = DSR(config).eval()
    s, d = config.image_size, config.embedding_dim
    images = torch.rand(2, 3, s, s)
    with torch.no_grad():
        encoding = model.latent.encode(images)
        assert encoding.features_hi.shape == (2, config.vq_hidden, s // 4, s // 4)
        assert encoding.z_lo.shape == encoding.q_lo.shape == (2, d, s // 8, s // 8)
        assert encoding.z_hi.shape == encoding.q_hi.shape == (2, d, s // 4, s // 4)
        out = model(encoding.q_hi, encoding.q_lo, run_upsampling=True)
    assert out.restored.z_hi.shape == out.restored.q_hi.shape == (2, d, s // 4, s // 4)
    assert out.restored.z_lo.shape == out.restored.q_lo.shape == (2, d, s // 8, s // 8)
    assert out.object_image.shape == out.general_image.shape == (2, 3, s, s)
    assert out.detection_logits.shape == out.upsampled_logits.shape == (2, 2, s, s)
    prediction = model.predict(images)
    assert prediction.image_scores.shape == (2,)
    assert prediction.pixel_maps.shape == (2, s, s)
    assert torch.isfinite(prediction.pixel_maps).all()
    assert ((prediction.pixel_maps >= 0) & (prediction.pixel_maps <= 1)).all()


def test_quantised_features_are_codebook_vectors() -> None:
    model = DSR(preset("tiny")).eval()
    with torch.no_grad():
        encoding = model.latent.encode(torch.rand(2, 3, 64, 64))
    codebook = model.latent.quantizer_hi.codebook
    vectors = encoding.q_hi.permute(0, 2, 3, 1).reshape(-1, codebook.shape[1])
    distances = torch.cdist(vectors, codebook).min(dim=1).values
    assert distances.max() < 1e-5
    nearest = model.latent.quantizer_hi.quantize_indices(encoding.z_hi)
    brute = torch.cdist(encoding.z_hi.permute(0, 2, 3, 1).reshape(-1, codebook.shape[1]), codebook).argmin(1)
    assert torch.equal(nearest.flatten(), brute)


def test_every_trainable_stage2_parameter_gets_a_gradient() -> None:
    model = DSR(preset("tiny"))
    model.latent.requires_grad_(False)
    with torch.no_grad():
        encoding = model.latent.encode(torch.rand(2, 3, 64, 64))
    out = model(encoding.q_hi, encoding.q_lo, run_upsampling=True)
    loss = (out.restored.z_hi.square().mean() + out.restored.z_lo.square().mean() + out.object_image.mean()
            + out.detection_logits.mean() + out.upsampled_logits.mean())
    loss.backward()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


def test_predict_uses_detection_map_without_upsampling_module() -> None:
    config = preset("tiny", use_upsampling=False)
    model = DSR(config).eval()
    images = torch.rand(2, 3, 64, 64)
    prediction = model.predict(images)
    with torch.no_grad():
        encoding = model.latent.encode(images)
        out = model(encoding.q_hi, encoding.q_lo)
    assert out.upsampled_logits is None
    torch.testing.assert_close(prediction.pixel_maps, torch.softmax(out.detection_logits, 1)[:, 1])


def test_image_score_is_max_of_mean_filtered_detection_map() -> None:
    model = DSR(preset("tiny", score_filter_size=3))
    logits = torch.zeros(1, 2, 8, 8)
    logits[0, 1, 0, 0] = 50.0  # probability ~1 in one corner pixel, 0.5 elsewhere
    score = model.image_scores(logits)
    # 3x3 window at the corner with zero padding: (1 + 3 * 0.5) / 9 ... vs interior windows of 0.5
    interior = 0.5 + 0.5 / 9
    assert score.item() == pytest.approx(max(interior, (1 + 3 * 0.5) / 9), abs=1e-6)


def test_ema_codebook_moves_only_in_training_mode() -> None:
    quantizer = DSR(preset("tiny")).latent.quantizer_hi
    z = torch.randn(2, quantizer.code_dim, 4, 4)
    before = quantizer.codebook.clone()
    quantizer.eval()(z)
    quantizer.quantize(z)
    assert torch.equal(before, quantizer.codebook)
    quantizer.train()(z)
    assert not torch.equal(before, quantizer.codebook)


def _train_quantizer(restart_threshold: float, steps: int = 5):
    from dsr.model.quantizer import VectorQuantizer

    torch.manual_seed(0)
    quantizer = VectorQuantizer(64, 8, 0.25, 0.99, 1e-5, restart_threshold).train()
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):  # small-norm features, far from the N(0,1) initial codes, as from a fresh encoder
        z = 0.05 * torch.randn(4, 8, 8, 8, generator=g)
        with torch.enable_grad():
            quantizer(z)
    used = quantizer.quantize_indices(0.05 * torch.randn(4, 8, 8, 8, generator=g)).unique().numel()
    return quantizer, used


def test_dead_code_restarts_keep_the_codebook_in_use() -> None:
    reference, used_reference = _train_quantizer(0.0)
    restarted, used_restarted = _train_quantizer(1.0)
    # the reference EMA update leaves unused codes at ~1/epsilon scale: a handful of codes serve everything
    assert used_reference <= 4 and reference.codebook.norm(dim=1).max() > 1e3
    assert used_restarted >= 32 and restarted.codebook.norm(dim=1).max() < 10


def test_predict_does_not_depend_on_chunk_size() -> None:
    model = DSR(preset("tiny")).eval()
    images = torch.rand(3, 3, 64, 64)
    whole, single = model.predict(images, chunk_size=3), model.predict(images, chunk_size=1)
    # convolution kernels sum in a batch-size-dependent order: equal within the 1e-3 the maps are held to
    torch.testing.assert_close(whole.pixel_maps, single.pixel_maps, atol=1e-3, rtol=0)
    torch.testing.assert_close(whole.image_scores, single.image_scores, atol=1e-3, rtol=0)
