import pytest

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
    with pytest.raises(ValueError, match="known presets: paper, small, tiny"):
        preset("huge")


def test_paper_preset_is_the_default_and_round_trips() -> None:
    assert preset("paper") == DSRConfig()
    small = preset("small", similarity_bound=0.05)
    assert small.similarity_bound == 0.05 and small.image_size == 64
    assert DSRConfig.from_dict(small.to_dict()) == small
