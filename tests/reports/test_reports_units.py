"""Formatting, paper look-ups, aggregation and figure functions on small hand-made frames (no Ray)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from reports import figures
from reports.paper import load_paper_tables, paper_curve, paper_value
from reports.render import format_delta, format_value
from reports.spec import STUDIES, VARIANTS
from reports.tables import build_tables, category_matrix


def test_format_value_and_delta():
    assert format_value(97.14) == "97.1"
    assert format_value(97.16, 0.333) == "97.2 ± 0.3"
    assert format_value(97.16, 0.333, 1, 3) == "97.2 ± 0.3 (1/3 seeds)"
    assert format_value(math.nan, 0.3) == "–" and format_value(None) == "–"
    assert format_delta(0.26) == "+0.3" and format_delta(-1.24) == "-1.2" and format_delta(math.nan) == "–"


def test_paper_values_round_trip_every_row():
    tables = load_paper_tables()
    assert len(tables) > 0
    for row in tables.itertuples():
        lam = None if pd.isna(row.lambda_s) else row.lambda_s
        assert paper_value(int(row.table), row.metric, row.variant, lam) == row.value
    assert math.isnan(paper_value(6, "image_auroc", "not_a_variant"))
    assert math.isnan(paper_value(5, "image_auroc", "DSR", 0.3))
    curve = paper_curve(5, "image_auroc", "DSR")
    assert list(curve["lambda_s"]) == sorted(curve["lambda_s"])


def test_paper_table_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("table,variant,metric,value\n6,DSR,image_auroc,98.2\n")
    with pytest.raises(ValueError, match="bad.csv.*lambda_s"):
        load_paper_tables(bad)


def _trials(rows):
    base = {"experiment": "e", "trial_id": "t", "tune_status": "TERMINATED", "study": "ablation", "dataset": "mvtec",
            "preset": "small", "overrides": "{}", "lambda_s": 0.2, "codebook_size": 256,
            "sampling_strategy": "similarity_bound", "sampling_params": "", "sampling": "similarity_bound",
            "params": "", "image_ap": math.nan, "pixel_auroc": math.nan, "aupro": math.nan, "timestamp": 0.0,
            "path": ""}
    frame = pd.DataFrame([{**base, **r} for r in rows])
    frame["seed"] = frame["seed"].astype("Int64")
    return frame


def test_incomplete_seed_is_left_out_and_never_filled():
    rows = []
    for seed, (a, b) in enumerate([(0.90, 0.80), (0.70, None)]):
        for category, value in (("a", a), ("b", b)):
            rows.append({"variant": "DSR", "category": category, "seed": seed,
                         "status": "done" if value is not None else "failed",
                         "image_auroc": value if value is not None else math.nan, "pixel_ap": 0.5})
    rows.append({"variant": "DSR_img", "category": "a", "seed": 0, "status": "running", "image_auroc": math.nan,
                 "pixel_ap": math.nan})
    (table,) = build_tables(_trials(rows))
    s = table.summary.set_index("variant")
    assert s.loc["DSR", "image_auroc"] == pytest.approx(85.0) and s.loc["DSR", "image_auroc_n_seeds"] == 1
    assert math.isnan(s.loc["DSR", "image_auroc_std"])
    assert s.loc["DSR", "pixel_ap"] == pytest.approx(50.0) and s.loc["DSR", "pixel_ap_n_seeds"] == 1
    assert math.isnan(s.loc["DSR_img", "image_auroc"]) and math.isnan(s.loc["DSR_img", "image_auroc_delta"])
    assert table.missing.sentence() == "5 of 8 trials missing (1 failed, 1 running, 3 never started)."
    matrix = category_matrix(table, "image_auroc")
    assert matrix.loc["a", "DSR"] == pytest.approx(80.0) and matrix.loc["b", "DSR"] == pytest.approx(80.0)
    assert matrix["DSR_img"].isna().all()


def test_variants_follow_the_paper_and_duplicates_keep_the_latest_done():
    rows = [{"variant": v, "category": "a", "seed": 0, "status": "done", "image_auroc": 0.9, "pixel_ap": 0.5}
            for v in reversed(VARIANTS)]
    rows.append({"variant": "DSR", "category": "a", "seed": 0, "status": "done", "image_auroc": 0.95,
                 "pixel_ap": 0.5, "timestamp": 10.0})
    rows.append({"variant": "DSR", "category": "a", "seed": 0, "status": "failed", "image_auroc": math.nan,
                 "pixel_ap": math.nan, "timestamp": 20.0})
    (table,) = build_tables(_trials(rows))
    assert list(table.summary["variant"]) == list(VARIANTS)
    assert table.summary.loc[0, "image_auroc"] == pytest.approx(95.0) and table.duplicates_dropped == 2


def test_a_study_with_two_variants_splits_by_variant():
    rows = [{"study": "similarity_bound", "variant": v, "lambda_s": lam, "category": "a", "seed": 0,
             "status": "done", "image_auroc": 0.9, "pixel_ap": 0.5}
            for v in ("DSR_U-", "DSR") for lam in (0.5, 0.05)]
    (table,) = build_tables(_trials(rows))
    assert table.conditions == ("variant", "lambda_s") and table.spec is STUDIES["similarity_bound"]
    assert list(table.summary["label"]) == ["DSR · 0.05", "DSR · 0.5", "DSR_U- · 0.05", "DSR_U- · 0.5"]
    assert list(table.summary["image_auroc_paper"].isna()) == [False, False, True, True]


def test_figure_functions_draw_on_the_given_axes_and_mark_missing():
    summary = pd.DataFrame({"label": ["DSR", "DSR_img"], "image_auroc": [97.0, np.nan],
                            "image_auroc_std": [0.5, np.nan], "image_auroc_paper": [98.2, 97.8],
                            "lambda_s": [0.05, 0.2]})
    ax = figures.new_axes()
    assert figures.plot_grouped_bars(summary, ["image_auroc"], ax=ax) is ax
    assert len(ax.patches) == 1 and "missing" in [t.get_text() for t in ax.texts]  # annotations are texts
    ax = figures.new_axes()
    curve = pd.DataFrame({"lambda_s": [0.05, 0.2], "value": [98.2, 97.1]})
    assert figures.plot_metric_curve(summary, "lambda_s", "image_auroc", paper=curve, ax=ax) is ax
    ax = figures.new_axes()
    matrix = pd.DataFrame({"DSR": [97.0, np.nan]}, index=["a", "b"])
    assert figures.plot_category_heatmap(matrix, "image_auroc", ax=ax) is ax
    assert "missing" in [t.get_text() for t in ax.texts]
