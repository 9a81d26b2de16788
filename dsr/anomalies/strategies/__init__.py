"""Feature-space sampling strategies. To add one: a file with a `@register("name")` class, and import it here."""

from dsr.anomalies.strategies.base import (
    STRATEGIES,
    SamplingStrategy,
    make_strategy,
    rank_of,
    ranking_distances,
    register,
    squared_distances,
    uniform_in_rank_window,
)
from dsr.anomalies.strategies import similarity_bound, uniform, distance_band, softmax_distance  # noqa: F401  (registers)
from dsr.anomalies.strategies import mixture  # noqa: F401  (registers)
from dsr.anomalies.strategies import usage_weighted  # noqa: F401  (registers)
from dsr.anomalies.strategies import curriculum  # noqa: F401  (registers)

__all__ = ["STRATEGIES", "SamplingStrategy", "make_strategy", "register", "rank_of", "ranking_distances",
           "squared_distances", "uniform_in_rank_window"]
