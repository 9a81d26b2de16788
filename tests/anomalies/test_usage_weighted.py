"""Strategy 'usage_weighted': a distance band in which codes are drawn by how often the batch's features use them.

The registry-wide checks (windows, chunking, reproducibility, shapes) in test_strategies.py cover it too.
"""

from __future__ import annotations

import pytest
import torch

from dsr.anomalies.strategies import make_strategy
from dsr.config import DSRConfig


def _strategy(**params):
    return make_strategy(DSRConfig(sampling_strategy="usage_weighted", sampling_params=params))


def _ranks(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """(N, K) brute-force rank of every code for every row (0 = nearest), float64."""
    d = torch.cdist(z.double(), codebook.double()) ** 2
    return d.argsort(1).argsort(1)


def _dominated_batch(n_dominant: int = 90, n_rare: int = 8, k: int = 16, seed: int = 0):
    """A codebook on a line (code j at x = j), rows near code 0 (dominant) and code 1 (rare): both are then among
    the nearest few codes of every row, so inside a band of the nearest ranks."""
    g = torch.Generator().manual_seed(seed)
    codebook = torch.zeros(k, 2)
    codebook[:, 0] = torch.arange(k, dtype=torch.float32)
    nearest = torch.cat((torch.zeros(n_dominant, dtype=torch.long), torch.ones(n_rare, dtype=torch.long)))
    z = codebook[nearest] + 0.1 * torch.randn(nearest.numel(), 2, generator=g)
    return z, codebook, torch.zeros(nearest.numel(), dtype=torch.long)


def test_usage_counts_are_the_nearest_codes_over_all_chunks() -> None:
    g = torch.Generator().manual_seed(0)
    codebook = torch.randn(32, 8, generator=g)
    z = codebook[torch.randint(32, (50,), generator=g)] + 0.05 * torch.randn(50, 8, generator=g)
    strategy = _strategy()
    strategy.chunk_rows = 7  # counts must cover every chunk, not only the last
    expected = torch.bincount(torch.cdist(z, codebook).argmin(1), minlength=32).double()
    assert torch.equal(strategy.usage_counts(z, codebook), expected)


@pytest.mark.parametrize(("low", "high"), [(0.25, 0.5), (0.0, 0.1), (0.8, 1.0)])
def test_every_draw_lies_in_the_band(low: float, high: float) -> None:
    k, n = 64, 200
    g = torch.Generator().manual_seed(1)
    codebook = torch.randn(k, 8, generator=g)
    z = codebook[torch.randint(4, (n,), generator=g)] + 0.3 * torch.randn(n, 8, generator=g)  # usage on 4 codes
    strategy = _strategy(low=low, high=high)
    strategy.chunk_rows = 16
    index = strategy.sample(z, codebook, torch.zeros(n, dtype=torch.long), 1, torch.Generator().manual_seed(0))
    rank = _ranks(z, codebook).gather(1, index[:, None]).squeeze(1)
    assert bool(((rank >= int(low * k)) & (rank < int(high * k))).all()), "a code outside the band was drawn"


def test_dominant_code_out_of_band_is_never_drawn() -> None:
    """Every row's own (dominant) code is rank 0; a band starting at rank 4 must exclude it despite its usage."""
    z, codebook, ids = _dominated_batch()
    index = _strategy(low=0.25, high=0.75).sample(z, codebook, ids, 1, torch.Generator().manual_seed(0))
    assert not bool((index == 0).any())


def test_dominant_code_is_drawn_far_more_often_than_a_rare_one() -> None:
    """Usage 90 vs 8 with smoothing 1: in-band odds 91 : 9 (~10); distance_band (uniform in the band) gives ~1."""
    z, codebook, ids = _dominated_batch()
    ranks = _ranks(z, codebook)
    band_high = int(0.5 * codebook.shape[0])  # ranks [0, 8): codes 0 and 1 are in band for every row
    assert bool((ranks[:, :2] < band_high).all())
    g = torch.Generator().manual_seed(0)
    ratios = {}
    for name, params in (("usage_weighted", {"low": 0.0, "high": 0.5, "smoothing": 1.0}),
                         ("distance_band", {"low": 0.0, "high": 0.5})):
        strategy = make_strategy(DSRConfig(sampling_strategy=name, sampling_params=params))
        index = torch.cat([strategy.sample(z, codebook, ids, 1, g) for _ in range(10)])  # 980 draws
        dominant, rare = int((index == 0).sum()), int((index == 1).sum())
        assert rare > 0  # smoothing keeps every in-band code possible
        ratios[name] = dominant / rare
    assert ratios["usage_weighted"] > 3.0, ratios
    assert ratios["distance_band"] < 2.0, ratios  # control: the same data without usage weights


def test_unused_codes_keep_a_smoothing_share_and_large_smoothing_is_uniform() -> None:
    z, codebook, ids = _dominated_batch()
    g = torch.Generator().manual_seed(0)
    small = torch.cat([_strategy(low=0.0, high=0.5, smoothing=1.0).sample(z, codebook, ids, 1, g)
                       for _ in range(10)])
    unused_share = float((small >= 2).double().mean())  # codes 2..: usage 0, weight 1 each (of ~6 in band: 6/104)
    assert 0.01 < unused_share < 0.15
    large = torch.cat([_strategy(low=0.0, high=0.5, smoothing=1e6).sample(z, codebook, ids, 1, g)
                       for _ in range(10)])
    assert 0.5 < int((large == 0).sum()) / int((large == 1).sum()) < 2.0


def test_reproducible_under_a_fixed_generator() -> None:
    z, codebook, ids = _dominated_batch()
    strategy = _strategy(low=0.0, high=0.5)
    first = strategy.sample(z, codebook, ids, 1, torch.Generator().manual_seed(5))
    again = strategy.sample(z, codebook, ids, 1, torch.Generator().manual_seed(5))
    other = strategy.sample(z, codebook, ids, 1, torch.Generator().manual_seed(6))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_exact_path_matches_the_usage_distribution() -> None:
    """With no rejection rounds every row goes through the partial-sort path; it must give the same law."""
    z, codebook, ids = _dominated_batch()
    strategy = _strategy(low=0.0, high=0.5)
    strategy.rounds = 0
    g = torch.Generator().manual_seed(0)
    index = torch.cat([strategy.sample(z, codebook, ids, 1, g) for _ in range(10)])
    rank = _ranks(z, codebook).repeat(10, 1).gather(1, index[:, None]).squeeze(1)
    assert bool((rank < 8).all())
    assert int((index == 0).sum()) / int((index == 1).sum()) > 3.0


def test_defaults_follow_distance_band() -> None:
    strategy = make_strategy(DSRConfig(sampling_strategy="usage_weighted", excluded_nearest_fraction=0.1))
    low, high = strategy.rank_windows(100, 2, torch.Generator())
    assert low.tolist() == [10, 10] and high.tolist() == [60, 60] and strategy.smoothing == 1.0


@pytest.mark.parametrize(("params", "key"), [
    ({"low": -0.1}, "sampling_params.low"),
    ({"low": 1.0}, "sampling_params.low"),
    ({"low": 0.7, "high": 0.6}, "sampling_params.high"),
    ({"high": 1.5}, "sampling_params.high"),
    ({"smoothing": 0.0}, "sampling_params.smoothing"),
    ({"smoothing": -1.0}, "sampling_params.smoothing"),
    ({"smoothing": float("inf")}, "sampling_params.smoothing"),
    ({"smoothing": "lots"}, "sampling_params.smoothing"),
    ({"temperature": 1.0}, "sampling_params.temperature"),
])
def test_bad_params_are_named(params: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        _strategy(**params)
