"""End to end: fake Tune experiments with known metrics -> build_report -> every number checked in Markdown and CSV."""

from __future__ import annotations

import csv
import re
import statistics
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from dsr.config import preset
from reports_testkit import (ABLATION, CATEGORIES, CODEBOOK, LAMBDAS, SAMPLING, SEEDS, expected_cell, fmt,
                             read_markdown_table, trial_key)

PAPER_CSV = Path(__file__).resolve().parents[2] / "reports" / "paper_tables.csv"
SHARED_PAPER_CSV = Path(__file__).resolve().parents[3] / "shared" / "reference" / "paper_tables.csv"
NAMES = {"image_auroc": "image AUROC", "pixel_ap": "pixel AP"}


def paper_number(table: int, variant: str, metric: str, lambda_s: float | None = None) -> float | None:
    """The paper's value read straight from the project's CSV copy (not through reports.paper)."""
    with PAPER_CSV.open() as f:
        for row in csv.DictReader(f):
            if (int(row["table"]) == table and row["variant"] == variant and row["metric"] == metric
                    and (lambda_s is None or abs(float(row["lambda_s"]) - lambda_s) < 1e-9)):
                return float(row["value"])
    return None


def points_of(experiment, study: str, **match) -> list[dict]:
    return [p for p in experiment.points if p["study"] == study and all(p[k] == v for k, v in match.items())]


def csv_row(path: Path, column: str, value: str) -> dict[str, str]:
    """The raw CSV fields (strings, so a missing value is seen as "" and never as 0) of the row with column==value."""
    with path.open() as f:
        rows = [r for r in csv.DictReader(f) if r[column] == value]
    assert len(rows) == 1, f"{path}: {len(rows)} rows with {column}={value}"
    return rows[0]


def close(field: str, expected: float | None) -> bool:
    return field == "" if expected is None else field != "" and float(field) == pytest.approx(expected, abs=1e-9)


def test_paper_numbers_are_a_copy_of_the_reference():
    if not SHARED_PAPER_CSV.is_file():
        pytest.skip("shared reference not present")
    assert pd.read_csv(PAPER_CSV).equals(pd.read_csv(SHARED_PAPER_CSV))


def test_table6_every_number_matches(experiments, full_report):
    exp = experiments["full"]
    tables = full_report.parent / "tables"
    rows = read_markdown_table(tables / "table6-mvtec-small.md")
    canonical = ["DSR", "DSR_img", "DSR_random", "DSR_Limg", "DSR_Lfeat", "DSR_U-"]
    ours = sorted({v for v, _ in ABLATION}, key=canonical.index)
    assert [r["variant"] for r in rows] == ours
    for row in rows:
        points = points_of(exp, "ablation", variant=row["variant"])
        fields = csv_row(tables / "table6-mvtec-small.csv", "variant", row["variant"])
        for metric, name in NAMES.items():
            mean, std, n = expected_cell(points, exp.metrics, metric, exp.done, SEEDS, CATEGORIES)
            paper = paper_number(6, row["variant"], metric)
            assert row[name] == fmt(mean, std)
            assert row[f"{name} paper"] == f"{paper:.1f}"
            assert row[f"{name} Δ"] == f"{mean - paper:+.1f}"
            assert close(fields[metric], mean) and close(fields[f"{metric}_std"], std)
            assert close(fields[f"{metric}_paper"], paper) and close(fields[f"{metric}_delta"], mean - paper)
            assert fields[f"{metric}_n_seeds"] == str(n) == str(len(SEEDS))
        assert row["trials done"] == f"{len(CATEGORIES) * len(SEEDS)}/{len(CATEGORIES) * len(SEEDS)}"


def test_table5_is_wide_with_the_paper_row_and_delta(experiments, full_report):
    exp = experiments["full"]
    tables = full_report.parent / "tables"
    rows = {r["λs"]: r for r in read_markdown_table(tables / "table5-mvtec-small.md")}
    default = preset("small").similarity_bound
    lambdas = sorted(o.get("similarity_bound", default) for _, o in LAMBDAS)
    assert list(rows["image AUROC, ours"])[1:] == [f"{x:g}" for x in lambdas]  # columns λs ascending
    for (variant, overrides) in LAMBDAS:
        lam = overrides.get("similarity_bound", default)
        points = points_of(exp, "similarity_bound", overrides=overrides)
        mean, std, _ = expected_cell(points, exp.metrics, "image_auroc", exp.done, SEEDS, CATEGORIES)
        paper = paper_number(5, variant, "image_auroc", lam)
        assert rows["image AUROC, ours"][f"{lam:g}"] == fmt(mean, std)
        assert rows["image AUROC, paper"][f"{lam:g}"] == f"{paper:.1f}"
        assert rows["image AUROC, Δ (ours − paper)"][f"{lam:g}"] == f"{mean - paper:+.1f}"
        fields = csv_row(tables / "table5-mvtec-small.csv", "label", f"{lam:g}")
        assert close(fields["lambda_s"], lam) and close(fields["image_auroc"], mean)
        assert close(fields["image_auroc_std"], std) and close(fields["image_auroc_delta"], mean - paper)


@pytest.mark.parametrize("study, stem, conditions, column, label_of", [
    ("codebook", "codebook", CODEBOOK, "K",
     lambda o: str(o.get("codebook_size", preset("small").codebook_size))),
    ("sampling", "sampling", SAMPLING, "sampling strategy",
     lambda o: (f"{o['sampling_strategy']}(high=0.4, low=0.1)" if o else preset("small").sampling_strategy)),
])
def test_codebook_and_sampling_tables(experiments, full_report, study, stem, conditions, column, label_of):
    exp = experiments["full"]
    tables = full_report.parent / "tables"
    rows = read_markdown_table(tables / f"{stem}-mvtec-small.md")
    labels = [label_of(o) for _, o in conditions]
    if study == "codebook":
        labels.sort(key=int)
    else:  # the paper's strategy first
        labels.sort(key=lambda s: (not s.startswith("similarity_bound"), s))
    assert [r[column] for r in rows] == labels
    assert not any("paper" in header for header in rows[0])  # the paper has no numbers for these studies
    for (_, overrides) in conditions:
        row = next(r for r in rows if r[column] == label_of(overrides))
        points = points_of(exp, study, overrides=overrides)
        for metric, name in NAMES.items():
            mean, std, n = expected_cell(points, exp.metrics, metric, exp.done, [0], CATEGORIES)
            assert std is None and row[name] == fmt(mean)  # one seed: no ±
            fields = csv_row(tables / f"{stem}-mvtec-small.csv", "label", label_of(overrides))
            assert close(fields[metric], mean) and fields[f"{metric}_std"] == ""


@pytest.mark.parametrize("stem, study, conditions, key", [
    ("table6-mvtec-small", "ablation", ABLATION, lambda v, o: v),
    ("table5-mvtec-small", "similarity_bound", LAMBDAS,
     lambda v, o: f"{o.get('similarity_bound', preset('small').similarity_bound):g}"),
])
def test_per_category_tables(experiments, full_report, stem, study, conditions, key):
    exp = experiments["full"]
    tables = full_report.parent / "tables"
    metrics = ["image_auroc", "pixel_ap"] if study == "ablation" else ["image_auroc"]
    main = read_markdown_table(tables / f"{stem}.md")
    for metric in metrics:
        rows = read_markdown_table(tables / f"{stem}-per_category-{metric}.md")
        assert [r["category"] for r in rows] == sorted(CATEGORIES) + ["mean"]
        numbers = pd.read_csv(tables / f"{stem}-per_category-{metric}.csv")
        for variant, overrides in conditions:
            label = key(variant, overrides)
            for row in rows[:-1]:
                values = [100 * exp.metrics[trial_key(p)][metric]
                          for p in points_of(exp, study, variant=variant, overrides=overrides,
                                             category=row["category"])]
                assert row[label] == fmt(statistics.fmean(values), statistics.stdev(values))
                cell = numbers[(numbers["label"].astype(str) == label) & (numbers["category"] == row["category"])]
                assert cell[metric].item() == pytest.approx(statistics.fmean(values))
            if study == "ablation":
                assert rows[-1][label] == next(r for r in main if r["variant"] == label)[NAMES[metric]]
            else:
                assert rows[-1][label] == next(r for r in main if r["λs"].endswith("ours"))[label]


def test_latex_is_booktabs_with_the_same_cells(full_report):
    tables = full_report.parent / "tables"
    for md in sorted(tables.glob("*.md")):
        tex = md.with_suffix(".tex").read_text(encoding="utf-8")
        assert "\\begin{tabular}" in tex and tex.index("\\toprule") < tex.index("\\midrule") < tex.index("\\bottomrule")
        for row in read_markdown_table(md):
            cells = [re.sub(r"([_&%#])", r"\\\1", c).replace("±", "$\\pm$").replace("–", "--")
                     .replace("Δ", "$\\Delta$").replace("−", "$-$") for c in row.values()]
            assert " & ".join(cells) + r" \\" in tex, f"{md.name}: row {row} not in the LaTeX table"


def test_report_links_every_file_and_figures_are_images(full_report):
    out = full_report.parent
    text = full_report.read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert links and all((out / link).is_file() for link in links)
    for stem in ("table5-mvtec-small", "table6-mvtec-small", "codebook-mvtec-small", "sampling-mvtec-small"):
        assert f"tables/{stem}.md" in text and f"tables/{stem}.tex" in text and f"tables/{stem}.csv" in text
        assert f"figures/{stem}-overview.png" in text
    pngs = sorted((out / "figures").glob("*.png"))
    assert len(pngs) == (1 + 1) + 3 * (1 + 2)  # overview + one heatmap per metric: table 5, then 6, K, sampling
    for png in pngs:
        with Image.open(png) as image:
            image.verify()
        with Image.open(png) as image:
            assert image.format == "PNG" and min(image.size) > 100
        pdf = png.with_suffix(".pdf")
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 1000
    assert "All " in text and "missing" not in text.split("Values are")[0]


def test_partial_experiment_marks_missing_cells(experiments, partial_report):
    exp = experiments["partial"]
    text = partial_report.read_text(encoding="utf-8")
    assert "3 of 8 trials missing (1 failed, 1 incomplete, 1 never started)." in text
    tables = partial_report.parent / "tables"
    rows = {r["variant"]: r for r in read_markdown_table(tables / "table6-mvtec-small.md")}
    assert list(rows) == ["DSR", "DSR_img"]
    cats = sorted({p["category"] for p in exp.points})
    for variant, row in rows.items():
        points = points_of(exp, "ablation", variant=variant)
        fields = csv_row(tables / "table6-mvtec-small.csv", "variant", variant)
        for metric, name in NAMES.items():
            mean, std, n = expected_cell(points, exp.metrics, metric, exp.done, SEEDS, cats)
            assert row[name] == fmt(mean, std, n, len(SEEDS))
            assert close(fields[metric], mean)  # "" (never 0) when missing
            paper = paper_number(6, variant, metric)
            assert row[f"{name} paper"] == f"{paper:.1f}"
            assert row[f"{name} Δ"] == ("–" if mean is None else f"{mean - paper:+.1f}")
        done = sum(trial_key(p) in exp.done for p in points)
        assert row["trials done"] == f"{done}/{len(points)}"
    # the expected grid: DSR has one complete seed, DSR_img none
    assert rows["DSR"]["image AUROC"].endswith("(1/2 seeds)") and rows["DSR_img"]["image AUROC"] == "–"
    per_cat = read_markdown_table(tables / "table6-mvtec-small-per_category-image_auroc.md")
    for row in per_cat[:-1]:
        for variant in rows:
            values = [100 * exp.metrics[trial_key(p)]["image_auroc"]
                      for p in points_of(exp, "ablation", variant=variant, category=row["category"])
                      if trial_key(p) in exp.done]
            expected = fmt(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None,
                           len(values), len(SEEDS)) if values else "–"
            assert row[variant] == expected
    assert len(list((partial_report.parent / "figures").glob("*.png"))) == 3


def test_trials_csv_lists_every_trial_with_its_status(experiments, partial_report):
    exp = experiments["partial"]
    trials = pd.read_csv(partial_report.parent / "trials.csv")
    assert len(trials) == len(exp.points) - 1  # the never-started trial is not a Tune trial
    expected = {k: s for k, s in exp.statuses.items() if s != "never started"}
    for _, t in trials.iterrows():
        key = "|".join([t["study"], t["variant"], t["overrides"], t["category"], str(t["seed"])])
        assert t["status"] == expected.get(key, "done")
        if t["status"] != "done":
            assert pd.isna(t["image_auroc"])
        else:
            assert t["image_auroc"] == pytest.approx(exp.metrics[key]["image_auroc"])
