"""Sampling strategies: every registered strategy is checked against brute-force distance ranks."""

from __future__ import annotations

import pytest
import torch

from dsr.anomalies.strategies import STRATEGIES, SamplingStrategy, make_strategy, register, uniform_in_rank_window
from dsr.config import DSRConfig


def _data(k: int, d: int, n: int, num_images: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    codebook = torch.randn(k, d, generator=g)
    z = codebook[torch.randint(k, (n,), generator=g)] + 0.7 * torch.randn(n, d, generator=g)
    sample_ids = torch.randint(num_images, (n,), generator=g)
    return z, codebook, sample_ids


def _rank_bounds(z: torch.Tensor, codebook: torch.Tensor, index: torch.Tensor, eps: float = 1e-3):
    """Brute force in float64: the smallest and largest rank the chosen code can have within +-eps of its distance."""
    d = torch.cdist(z.double(), codebook.double(), compute_mode="donot_use_mm_for_euclid_dist") ** 2  # (N, K)
    chosen = d.gather(1, index[:, None])
    return (d < chosen - eps).sum(1), (d <= chosen + eps).sum(1) - 1


def _check_in_windows(strategy: SamplingStrategy, k: int, n: int = 300, num_images: int = 5, seed: int = 0):
    z, codebook, sample_ids = _data(k, 16, n, num_images, seed)
    low, high = strategy.rank_windows(k, num_images, torch.Generator().manual_seed(seed))
    index = strategy.sample(z, codebook, sample_ids, num_images, torch.Generator().manual_seed(seed))
    assert index.shape == (n,) and index.dtype == torch.long
    assert bool(((index >= 0) & (index < k)).all())
    assert bool(((low >= 0) & (low < high) & (high <= k)).all())
    rank_min, rank_max = _rank_bounds(z, codebook, index)
    row_low, row_high = low[sample_ids], high[sample_ids]
    assert bool(((rank_max >= row_low) & (rank_min < row_high)).all()), "a sampled code lies outside its window"
    return index, low, high


@pytest.mark.parametrize("name", sorted(STRATEGIES))
@pytest.mark.parametrize("k", [32, 256, 4096])
def test_samples_lie_in_rank_windows(name: str, k: int) -> None:
    strategy = make_strategy(DSRConfig(sampling_strategy=name))
    _check_in_windows(strategy, k, n=120 if k == 4096 else 300)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_chunked_processing_and_reproducibility(name: str) -> None:
    strategy = make_strategy(DSRConfig(sampling_strategy=name))
    strategy.chunk_rows = 7  # many small chunks, last one partial
    first, _, _ = _check_in_windows(strategy, 64, n=100, seed=3)
    again, _, _ = _check_in_windows(strategy, 64, n=100, seed=3)
    other, _, _ = _check_in_windows(strategy, 64, n=100, seed=4)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_no_rows(name: str) -> None:
    strategy = make_strategy(DSRConfig(sampling_strategy=name))
    out = strategy.sample(torch.zeros(0, 4), torch.randn(8, 4), torch.zeros(0, dtype=torch.long), 2,
                          torch.Generator().manual_seed(0))
    assert out.shape == (0,) and out.dtype == torch.long


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_rejects_mismatched_shapes(name: str) -> None:
    strategy = make_strategy(DSRConfig(sampling_strategy=name))
    with pytest.raises(ValueError, match="codebook"):
        strategy.sample(torch.zeros(3, 4), torch.randn(8, 5), torch.zeros(3, dtype=torch.long), 1,
                        torch.Generator())
    with pytest.raises(ValueError, match="sample_ids"):
        strategy.sample(torch.zeros(3, 4), torch.randn(8, 4), torch.zeros(2, dtype=torch.long), 1,
                        torch.Generator())


@pytest.mark.parametrize("bound", [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5])
@pytest.mark.parametrize("k", [32, 256, 4096])
def test_similarity_bound_every_table5_value(bound: float, k: int) -> None:
    strategy = make_strategy(DSRConfig(similarity_bound=bound))
    _, low, high = _check_in_windows(strategy, k, n=80 if k == 4096 else 200, num_images=8)
    excluded = int(0.05 * k)
    assert bool((low == excluded).all())
    # s ~ U[bound, 1): high = max(floor(s*K) + 1, excluded + 1), never below the bound's own window
    assert bool((high >= max(int(bound * k) + 1, excluded + 1)).all())


def test_similarity_bound_small_lambda_uses_nearest_allowed_code() -> None:
    """s < 0.05 gives an empty reference window; the documented choice is the single rank floor(0.05 K)."""
    strategy = make_strategy(DSRConfig(similarity_bound=0.01))
    low, high = strategy.rank_windows(4096, 20000, torch.Generator().manual_seed(0))
    empty_in_reference = high == low + 1
    assert 0.02 < float(empty_in_reference.float().mean()) < 0.06  # P(s < ~0.05) = 0.04 / 0.99
    assert bool((low[empty_in_reference] == 204).all())


def test_similarity_bound_strength_distribution() -> None:
    """high - 1 = floor(s K) with s ~ U[lambda, 1): its mean is about K (1 + lambda) / 2."""
    k, bound = 4096, 0.2
    _, high = make_strategy(DSRConfig(similarity_bound=bound)).rank_windows(k, 20000, torch.Generator().manual_seed(1))
    s = (high - 1).double() / k
    assert float(s.min()) >= bound - 1.0 / k and float(s.max()) < 1.0
    assert abs(float(s.mean()) - (1 + bound) / 2) < 0.01


def test_rank_draw_is_uniform_on_both_paths() -> None:
    """Rejection (wide windows) and the exact top-k path (narrow windows) both give uniform ranks."""
    g = torch.Generator().manual_seed(0)
    n, k = 6000, 64
    d = torch.rand(n, k, generator=g)
    ranks = d.argsort(1).argsort(1)
    for low, high in [(3, 60), (5, 8), (50, 53)]:  # wide; narrow from the near end; narrow from the far end
        index = uniform_in_rank_window(d, torch.full((n,), low), torch.full((n,), high), g)
        chosen = ranks.gather(1, index[:, None]).squeeze(1)
        counts = torch.bincount(chosen - low, minlength=high - low).double()
        assert counts.numel() == high - low, "a rank outside the window was drawn"
        expected = n / (high - low)
        assert bool(((counts - expected).abs() < 5 * expected ** 0.5 + 1).all())


def test_uniform_covers_all_codes() -> None:
    k, n = 32, 6400
    z, codebook, sample_ids = _data(k, 8, n, 4)
    index = make_strategy(DSRConfig(sampling_strategy="uniform")).sample(z, codebook, sample_ids, 4,
                                                                          torch.Generator().manual_seed(0))
    counts = torch.bincount(index, minlength=k).double()
    expected = n / k
    assert bool((counts > 0).all())
    assert bool(((counts - expected).abs() < 5 * expected ** 0.5).all())


def test_softmax_temperature_moves_mass_towards_near_codes() -> None:
    k = 256
    z, codebook, sample_ids = _data(k, 16, 1000, 4)
    mean_rank = {}
    for temperature in (0.02, 100.0):
        strategy = make_strategy(DSRConfig(sampling_strategy="softmax_distance",
                                           sampling_params={"temperature": temperature}))
        index = strategy.sample(z, codebook, sample_ids, 4, torch.Generator().manual_seed(0))
        rank_min, _ = _rank_bounds(z, codebook, index)
        assert bool((rank_min >= int(0.05 * k) - 1).all())
        mean_rank[temperature] = float(rank_min.double().mean())
    assert mean_rank[0.02] < 0.5 * mean_rank[100.0]
    assert abs(mean_rank[100.0] - (int(0.05 * k) + k - 1) / 2) < 10  # ~uniform over the allowed ranks


def test_distance_band_window_follows_params() -> None:
    strategy = make_strategy(DSRConfig(sampling_strategy="distance_band", sampling_params={"low": 0.5, "high": 0.75}))
    low, high = strategy.rank_windows(256, 3, torch.Generator())
    assert low.tolist() == [128] * 3 and high.tolist() == [192] * 3
    default = make_strategy(DSRConfig(sampling_strategy="distance_band", excluded_nearest_fraction=0.1))
    assert default.rank_windows(100, 1, torch.Generator())[0].tolist() == [10]


@pytest.mark.parametrize("strategy, params, key", [
    ("distance_band", {"low": 0.7, "high": 0.6}, "sampling_params.high"),
    ("distance_band", {"low": -0.1}, "sampling_params.low"),
    ("distance_band", {"high": "far"}, "sampling_params.high"),
    ("softmax_distance", {"temperature": 0.0}, "sampling_params.temperature"),
    ("similarity_bound", {"temperature": 1.0}, "sampling_params.temperature"),
    ("uniform", {"foo": 1}, "sampling_params.foo"),
])
def test_bad_params_are_named(strategy: str, params: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        make_strategy(DSRConfig(sampling_strategy=strategy, sampling_params=params))


def test_unknown_strategy_lists_known_names() -> None:
    with pytest.raises(ValueError, match="similarity_bound"):
        make_strategy(DSRConfig(sampling_strategy="nope"))


def test_register_rejects_duplicates() -> None:
    with pytest.raises(ValueError, match="uniform"):
        register("uniform")(type("Again", (SamplingStrategy,), {}))


@pytest.mark.parametrize(("weights", "expected"), [([1, 0], "similarity_bound"), ([0, 1], "uniform")])
def test_mixture_with_all_weight_on_one_strategy_gives_its_windows(weights, expected) -> None:
    k, n = 256, 400
    mixed = make_strategy(DSRConfig(sampling_strategy="mixture",
                                    sampling_params={"strategies": ["similarity_bound", "uniform"],
                                                     "weights": weights}))
    alone = make_strategy(DSRConfig(sampling_strategy=expected))
    low, high = mixed.rank_windows(k, n, torch.Generator().manual_seed(0))
    ref_low, ref_high = alone.rank_windows(k, n, torch.Generator().manual_seed(1))
    assert torch.equal(low, ref_low)  # the same window law: fixed low, and high over the same range
    assert int(high.min()) >= int(ref_high.min()) - 8 and int(high.max()) <= k


def test_mixture_draws_each_strategy_in_proportion() -> None:
    mixed = make_strategy(DSRConfig(sampling_strategy="mixture", sampling_params={
        "strategies": ["similarity_bound", "uniform"], "weights": [3, 1]}))
    low, _ = mixed.rank_windows(4096, 4000, torch.Generator().manual_seed(0))
    uniform_share = float((low == 0).double().mean())  # uniform's windows start at rank 0, the bound's at 5% of K
    assert 0.2 < uniform_share < 0.3


@pytest.mark.parametrize(("params", "field"), [({"strategies": ["softmax_distance"]}, "strategies"),
                                                ({"strategies": []}, "strategies"),
                                                ({"weights": [1, -1]}, "weights"), ({"weights": [0, 0]}, "weights")])
def test_mixture_parameters_are_checked(params, field) -> None:
    with pytest.raises(ValueError, match=f"sampling_params.{field}"):
        make_strategy(DSRConfig(sampling_strategy="mixture", sampling_params=params))


# ------------------------------------------------------------------------------------- adaptive: curriculum


def test_curriculum_band_moves_from_far_to_near_codes_with_progress() -> None:
    strategy = make_strategy(DSRConfig(sampling_strategy="curriculum", sampling_params={
        "start_low": 0.5, "start_high": 1.0, "end_low": 0.0, "end_high": 0.25}))
    windows = []
    for iteration in (0, 50, 100):
        strategy.set_progress(iteration, 100)
        low, high = strategy.rank_windows(256, 2, torch.Generator())
        windows.append((low.tolist(), high.tolist()))
    assert windows == [([128] * 2, [256] * 2), ([64] * 2, [160] * 2), ([0] * 2, [64] * 2)]
    default = make_strategy(DSRConfig(sampling_strategy="curriculum", excluded_nearest_fraction=0.1))
    default.set_progress(1, 1)
    assert default.rank_windows(100, 1, torch.Generator())[0].tolist() == [10]  # end_low defaults to f


def test_curriculum_samples_lie_in_the_band_of_their_progress() -> None:
    strategy = make_strategy(DSRConfig(sampling_strategy="curriculum"))
    for iteration in (0, 7, 10):
        strategy.set_progress(iteration, 10)
        _check_in_windows(strategy, 128, n=200, seed=iteration)


@pytest.mark.parametrize("name", sorted(set(STRATEGIES) - {"curriculum"}))
def test_static_strategies_ignore_progress(name: str) -> None:
    strategy = make_strategy(DSRConfig(sampling_strategy=name))
    z, codebook, sample_ids = _data(64, 16, 100, 4, seed=5)
    before = strategy.sample(z, codebook, sample_ids, 4, torch.Generator().manual_seed(1))
    strategy.set_progress(9, 10)
    after = strategy.sample(z, codebook, sample_ids, 4, torch.Generator().manual_seed(1))
    assert torch.equal(before, after)


@pytest.mark.parametrize(("params", "key"), [
    ({"start_low": 1.0}, "sampling_params.start_low"),
    ({"start_low": 0.6, "start_high": 0.5}, "sampling_params.start_high"),
    ({"end_low": -0.1}, "sampling_params.end_low"),
    ({"end_high": 1.5}, "sampling_params.end_high"),
    ({"end_high": "near"}, "sampling_params.end_high"),
    ({"width": 0.1}, "sampling_params.width"),
])
def test_curriculum_bad_params_are_named(params: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        make_strategy(DSRConfig(sampling_strategy="curriculum", sampling_params=params))


@pytest.mark.parametrize(("iteration", "total"), [(-1, 10), (11, 10), (0, 0)])
def test_progress_out_of_range_is_refused(iteration: int, total: int) -> None:
    strategy = make_strategy(DSRConfig(sampling_strategy="curriculum"))
    with pytest.raises(ValueError, match="progress"):
        strategy.set_progress(iteration, total)
