"""The paper's numbers (Zavrtanik et al., ECCV 2022, MVTec AD means, in percent), kept as data in paper_tables.csv.

The CSV is a copy of shared/reference/paper_tables.csv: one row per published number, columns
table, experiment, variant, lambda_s, metric, value.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import pandas as pd

PAPER_CSV = Path(__file__).with_name("paper_tables.csv")
_COLUMNS = ("table", "experiment", "variant", "lambda_s", "metric", "value")


def load_paper_tables(path: str | Path = PAPER_CSV) -> pd.DataFrame:
    """Read and check the paper's numbers; raises ValueError naming the file and the bad column."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"paper tables file {path} does not exist")
    frame = pd.read_csv(path)
    missing = [c for c in _COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(_COLUMNS)}")
    for column in ("table", "lambda_s", "value"):
        converted = pd.to_numeric(frame[column], errors="coerce")
        bad = converted.isna() & frame[column].notna()
        if bad.any():
            raise ValueError(f"{path}: column {column!r} has non-numeric value {frame.loc[bad, column].iloc[0]!r}")
        frame[column] = converted
    return frame


@lru_cache(maxsize=1)
def _default_tables() -> pd.DataFrame:
    return load_paper_tables()


def paper_value(table: int, metric: str, variant: str | None, lambda_s: float | None = None,
                tables: pd.DataFrame | None = None) -> float:
    """The paper's number (percent) for one cell, or NaN when the paper has none.

    Table 5 is keyed by (variant, lambda_s), Table 6 by variant alone.
    """
    tables = _default_tables() if tables is None else tables
    rows = tables[(tables["table"] == table) & (tables["metric"] == metric) & (tables["variant"] == variant)]
    if table == 5:
        if lambda_s is None or (isinstance(lambda_s, float) and math.isnan(lambda_s)):
            return math.nan
        rows = rows[(rows["lambda_s"] - float(lambda_s)).abs() < 1e-9]
    if len(rows) != 1:
        return math.nan
    return float(rows["value"].iloc[0])


def paper_curve(table: int = 5, metric: str = "image_auroc", variant: str = "DSR",
                tables: pd.DataFrame | None = None) -> pd.DataFrame:
    """The paper's sweep as a DataFrame (lambda_s ascending, value in percent), e.g. Table 5's curve."""
    tables = _default_tables() if tables is None else tables
    rows = tables[(tables["table"] == table) & (tables["metric"] == metric) & (tables["variant"] == variant)]
    return (rows[["lambda_s", "value"]].dropna().sort_values("lambda_s").reset_index(drop=True))
