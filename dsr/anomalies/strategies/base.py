"""The interface and registry of feature-space sampling strategies, and the shared rank-window sampler.

A strategy picks, for every masked latent position, the index of the code that replaces the real one. Every
strategy here is described by a per-image window of distance ranks [low, high) (rank 0 = the code nearest to
the pre-quantisation feature z): `rank_windows` draws the windows and `draw` picks codes inside them. Adding a
strategy = one file with a `@register`ed subclass + one import line in `strategies/__init__.py`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Callable, ClassVar, TypeVar

import torch
from torch import Tensor

from dsr.anomalies import _random
from dsr.config import DSRConfig

STRATEGIES: dict[str, type["SamplingStrategy"]] = {}

S = TypeVar("S", bound="type[SamplingStrategy]")


def register(name: str) -> Callable[[S], S]:
    """Class decorator: make a strategy available as config.sampling_strategy = name."""
    def add(cls: S) -> S:
        if name in STRATEGIES:
            raise ValueError(f"sampling strategy {name!r} is registered twice")
        cls.name = name
        STRATEGIES[name] = cls
        return cls
    return add


def make_strategy(config: DSRConfig) -> "SamplingStrategy":
    """The strategy named by config.sampling_strategy, built from config. Raises ValueError for unknown names."""
    if config.sampling_strategy not in STRATEGIES:
        raise ValueError(f"unknown DSRConfig.sampling_strategy {config.sampling_strategy!r}; "
                         f"known strategies: {', '.join(sorted(STRATEGIES))}")
    return STRATEGIES[config.sampling_strategy](config)


def ranking_distances(z: Tensor, codebook: Tensor, code_norms: Tensor) -> Tensor:
    """(n, K) squared L2 distances minus the per-row constant |z|^2: same ranking, one pass less."""
    return torch.addmm(code_norms, z, codebook.t(), alpha=-2.0)


def squared_distances(z: Tensor, codebook: Tensor, code_norms: Tensor) -> Tensor:
    """(n, K) squared L2 distances |z - c|^2, clamped at 0 against rounding."""
    return (ranking_distances(z, codebook, code_norms) + (z * z).sum(1, keepdim=True)).clamp_min_(0.0)


class SamplingStrategy:
    """Base class. Subclasses set `param_defaults` (their `sampling_params` keys) and override `rank_windows`
    and/or `draw`; `sample` is the entry point and is not overridden.

    Contract used by the tests: `sample` first calls `rank_windows(K, num_images, generator, device)` with the
    generator it was given, and every returned code's rank lies in its image's window.
    """

    name: ClassVar[str] = ""
    param_defaults: ClassVar[dict[str, Any]] = {}
    chunk_rows: ClassVar[int] = 256  # rows per distance block: 256 x 4096 float32 = 4 MB at K = 4096 (cache-sized)

    def __init__(self, config: DSRConfig) -> None:
        self.similarity_bound = config.similarity_bound
        self.excluded_nearest_fraction = config.excluded_nearest_fraction
        unknown = sorted(set(config.sampling_params) - set(self.param_defaults))
        if unknown:
            known = ", ".join(sorted(self.param_defaults)) or "none"
            raise ValueError(f"sampling_params.{unknown[0]} is not a parameter of sampling strategy "
                             f"{self.name!r} (its parameters: {known})")
        self.params: dict[str, Any] = {**self.param_defaults, **config.sampling_params}
        self.validate_params()

    def validate_params(self) -> None:
        """Raise ValueError naming `sampling_params.<key>` for a bad parameter value."""

    progress: float = 0.0  # the share of stage 2 done before the current step (adaptive strategies read it)

    def set_progress(self, iteration: int, total: int) -> None:
        """Training progress: `iteration` of `total` stage-2 iterations done. The training loop calls it before
        every step; static strategies ignore it (their draws do not change). ValueError outside 0..total."""
        if total < 1 or not 0 <= iteration <= total:
            raise ValueError(f"{self.name}: progress must be 0 <= iteration <= total (total >= 1), got "
                             f"{iteration} of {total}")
        self.progress = iteration / total

    def _param_float(self, key: str) -> float:
        value = self.params[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"sampling_params.{key} of strategy {self.name!r} must be a number, got {value!r}")
        return float(value)

    def excluded_ranks(self, codebook_size: int) -> int:
        """floor(excluded_nearest_fraction * K): ranks below this are never used."""
        return int(self.excluded_nearest_fraction * codebook_size)

    def rank_windows(self, codebook_size: int, num_images: int, generator: torch.Generator,
                     device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        """Per-image rank windows (low (num_images,), high (num_images,)) long, 0 <= low < high <= K."""
        raise NotImplementedError

    def sample(self, z: Tensor, codebook: Tensor, sample_ids: Tensor, num_images: int,
               generator: torch.Generator) -> Tensor:
        """Replacement code indices (N,) long for the pre-quantisation features z (N, D) at masked positions.

        codebook: (K, D); sample_ids: (N,) long, the image index in [0, num_images) of each row.
        Raises ValueError on inconsistent shapes.
        """
        if z.ndim != 2 or codebook.ndim != 2 or z.shape[1] != codebook.shape[1]:
            raise ValueError(f"{self.name}: z must be (N, D) and codebook (K, D), got {tuple(z.shape)} and "
                             f"{tuple(codebook.shape)}")
        if sample_ids.shape != (z.shape[0],):
            raise ValueError(f"{self.name}: sample_ids must be (N,) = ({z.shape[0]},), got {tuple(sample_ids.shape)}")
        low, high = self.rank_windows(codebook.shape[0], num_images, generator, z.device)
        if z.shape[0] == 0:
            return torch.empty(0, dtype=torch.long, device=z.device)
        sample_ids = sample_ids.to(z.device)
        with torch.no_grad():
            dtype = torch.promote_types(z.dtype, torch.float32)  # fp32 at least; float64 stays float64
            return self.draw(z.to(dtype), codebook.to(dtype), low[sample_ids], high[sample_ids], generator)

    def distance_chunks(self, z: Tensor, codebook: Tensor, squared: bool = False) -> Iterator[tuple[slice, Tensor]]:
        """(rows, d) per block of `chunk_rows` rows of z: d (n, K) the ranking distances (or, with `squared`, the
        true squared distances) of those rows to every code; one block at a time keeps memory cache-sized."""
        code_norms = (codebook * codebook).sum(1)
        distances = squared_distances if squared else ranking_distances
        for start in range(0, z.shape[0], self.chunk_rows):
            rows = slice(start, start + self.chunk_rows)
            yield rows, distances(z[rows], codebook, code_norms)

    def draw(self, z: Tensor, codebook: Tensor, low: Tensor, high: Tensor, generator: torch.Generator) -> Tensor:
        """Default: a code drawn uniformly from the ranks [low, high) of each row (N,), exactly, in row chunks."""
        out = torch.empty(z.shape[0], dtype=torch.long, device=z.device)
        for rows, d in self.distance_chunks(z, codebook):
            out[rows] = uniform_in_rank_window(d, low[rows], high[rows], generator)
        return out


def rank_of(d: Tensor, index: Tensor) -> Tensor:
    """(n,) rank of column index[i] in row i of d (n, K): the number of columns strictly nearer."""
    return (d < d.gather(1, index[:, None])).sum(1, dtype=torch.int32).long()  # int32 sum: ~2x faster than count_nonzero


def uniform_in_rank_window(d: Tensor, low: Tensor, high: Tensor, generator: torch.Generator,
                           rounds: int = 8) -> Tensor:
    """For each row of d (n, K), a column index drawn uniformly among the columns ranked [low, high) by d.

    Rejection sampling: draw a uniform column, count the columns strictly nearer (one O(K) pass) and accept it
    if that rank lies in the window; accepted draws are uniform over the window. Rows with narrow windows, and
    rows still rejected after `rounds` rounds, are resolved exactly by a partial sort (topk) instead.
    Expected passes per row: K / (high - low), about 2.3 for similarity_bound at lambda_s = 0.2 (a full sort of
    every row is ~15x slower at K = 4096).
    """
    n, k = d.shape
    out = torch.empty(n, dtype=torch.long, device=d.device)
    narrow = (high - low) * 16 < k  # acceptance < 1/16: go straight to the exact path
    pending = (~narrow).nonzero().squeeze(1)
    for _ in range(rounds):
        if pending.numel() == 0:
            break
        rows = d if pending.numel() == n else d[pending]
        candidate = _random.randint(k, (pending.numel(),), generator, d.device)
        rank = rank_of(rows, candidate)
        accepted = (rank >= low[pending]) & (rank < high[pending])
        out[pending[accepted]] = candidate[accepted]
        pending = pending[~accepted]
    exact = torch.cat((narrow.nonzero().squeeze(1), pending))
    if exact.numel():
        out[exact] = _exact_rank_draw(d[exact], low[exact], high[exact], generator)
    return out


def _exact_rank_draw(d: Tensor, low: Tensor, high: Tensor, generator: torch.Generator) -> Tensor:
    """Uniform rank in [low, high) per row, found with a partial sort from the nearer or the farther end."""
    return codes_at_ranks(d, _random.uniform_int(low, high, generator))


def codes_at_ranks(d: Tensor, rank: Tensor) -> Tensor:
    """(n,) column index of rank `rank[i]` (0 = smallest) in row i of d (n, K), by a partial sort from the nearer
    or the farther end, whichever is shorter. Ties keep topk's order."""
    k = d.shape[1]
    nearest_needed, farthest_needed = int(rank.max()) + 1, k - int(rank.min())
    if nearest_needed <= farthest_needed:
        order = torch.topk(d, nearest_needed, dim=1, largest=False, sorted=True).indices
        return order.gather(1, rank[:, None]).squeeze(1)
    order = torch.topk(d, farthest_needed, dim=1, largest=True, sorted=True).indices  # rank k-1 first
    return order.gather(1, (k - 1 - rank)[:, None]).squeeze(1)
