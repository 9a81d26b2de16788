import pytest
import torch

from dsr import DSRConfig, preset


@pytest.mark.parametrize(
    "field, value",
    [
        ("similarity_bound", 0.0),
        ("similarity_bound", 1.5),
        ("codebook_size", 0),
        ("image_size", 100),
        ("channel_order", "rbg"),
        ("anomaly_source", "pixels"),
        ("loss_img_weight", -1.0),
        ("batch_size", 2.5),
        ("score_filter_size", 20),
        ("eval_center_crop", 512),
        ("precision", "fp16"),
    ],
)
def test_bad_values_are_rejected_with_the_field_name(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        DSRConfig(**{field: value})


def test_unknown_fields_and_presets_are_named() -> None:
    with pytest.raises(ValueError, match="codebok_size"):
        DSRConfig().replace(codebok_size=3)
    with pytest.raises(ValueError, match="known presets: paper, small, medium, tiny"):
        preset("huge")


def test_paper_preset_is_the_default_and_round_trips() -> None:
    assert preset("paper") == DSRConfig()
    small = preset("small", similarity_bound=0.05)
    assert small.similarity_bound == 0.05 and small.image_size == 64
    assert DSRConfig.from_dict(small.to_dict()) == small


@pytest.mark.slow  # a 128 px forward pass of the medium model: 12 s on the loaded CPU
def test_medium_preset_validates_and_is_between_small_and_paper() -> None:
    """The capacity step: 128 px, every width above the small preset's and at most the paper's, longer stages."""
    from dsr import DSR

    small, medium, paper = preset("small"), preset("medium"), preset("paper")
    assert DSRConfig.from_dict(medium.to_dict()) == medium and medium.image_size == 128
    for name in ("vq_hidden", "embedding_dim", "codebook_size", "restriction_width", "object_decoder_width",
                 "unet_width", "stage2_iterations"):
        assert getattr(small, name) < getattr(medium, name) <= getattr(paper, name), name
    for name in ("both_levels_probability", "anomaly_probability", "similarity_bound"):
        assert getattr(medium, name) == getattr(small, name), name  # the learning fixes of small carry over
    with torch.no_grad():
        prediction = DSR(medium).eval().predict(torch.rand(1, 3, 128, 128))
    assert prediction.pixel_maps.shape == (1, 128, 128) and torch.isfinite(prediction.image_scores).all()
