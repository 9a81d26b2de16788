"""Render: StudyTables -> display DataFrames of strings -> Markdown, LaTeX (booktabs) and CSV files.

Numbers are formatted in one place (`format_value`, `format_delta`): percent with one decimal like the paper,
"± std" over seeds when there are several, "(n/m seeds)" when only some seeds are complete, and MISSING ("–")
for a cell without a value. CSVs keep the unformatted numbers (percent) with empty fields for missing values.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from reports.spec import CONDITION_NAMES, METRIC_NAMES, MISSING
from reports.tables import StudyTable, format_condition

PAPER_NOTE = "paper: Zavrtanik et al., ECCV 2022, MVTec AD mean"


def format_value(mean: float, std: float = math.nan, n: int | None = None, n_expected: int | None = None) -> str:
    """"97.1 ± 0.3" (percent, one decimal); "97.1" without a std; MISSING if mean is NaN."""
    if _nan(mean):
        return MISSING
    text = f"{mean:.1f}" if _nan(std) else f"{mean:.1f} ± {std:.1f}"
    if n is not None and n_expected is not None and n < n_expected:
        text += f" ({n}/{n_expected} seeds)"
    return text


def format_interval(low: float, high: float) -> str:
    """"[96.2, 99.0]" (percent); MISSING when the trials saved no per-image records."""
    return MISSING if _nan(low) or _nan(high) else f"[{low:.1f}, {high:.1f}]"


def format_comparison(delta: float, low: float, high: float, significant: Any, fewer_seeds: Any = False) -> str:
    """"-2.1 [-4.0, -0.3] *": the paired difference to the baseline, its interval, * when it excludes 0;
    "(fewer seeds)" instead of * when the condition finished fewer seeds than the baseline."""
    if _nan(delta) or _nan(low):
        return MISSING
    mark = " (fewer seeds)" if not _nan(fewer_seeds) and bool(fewer_seeds) else (" *" if significant else "")
    return f"{delta:+.1f} [{low:+.1f}, {high:+.1f}]" + mark


def format_delta(delta: float) -> str:
    """Signed difference in percentage points, "+0.3" / "-1.2"; MISSING if NaN."""
    return MISSING if _nan(delta) else f"{delta:+.1f}"


def summary_display(table: StudyTable) -> pd.DataFrame:
    """The table as the paper lays it out (all cells strings): wide (conditions as columns) or long."""
    spec = table.spec
    paper_metrics = [m for m in spec.metrics if table.summary[f"{m}_paper"].notna().any()]
    s = table.summary
    if spec.layout == "wide":
        header = " / ".join(CONDITION_NAMES.get(c, c) for c in table.conditions)
        rows: list[list[str]] = []
        for m in spec.metrics:
            name = METRIC_NAMES[m]
            rows.append([f"{name}, ours"] + [_cell(r, m) for _, r in s.iterrows()])
            if f"{m}_ci_low" in s:
                rows.append([f"{name}, 95% CI"] + [format_interval(r[f"{m}_ci_low"], r[f"{m}_ci_high"])
                                                   for _, r in s.iterrows()])
                rows.append([f"{name}, vs {table.baseline}"] + _comparisons(s, m))
            if m in paper_metrics:
                rows.append([f"{name}, paper"] + [format_value(v) for v in s[f"{m}_paper"]])
                rows.append([f"{name}, Δ (ours − paper)"] + [format_delta(v) for v in s[f"{m}_delta"]])
        rows.append(["trials done"] + _trial_counts(s))
        return pd.DataFrame(rows, columns=[header, *s["label"]])
    out = pd.DataFrame({CONDITION_NAMES.get(c, c): [format_condition(c, v) for v in s[c]] for c in table.conditions})
    for m in spec.metrics:
        name = METRIC_NAMES[m]
        out[name] = [_cell(r, m) for _, r in s.iterrows()]
        if f"{m}_ci_low" in s:
            out[f"{name} 95% CI"] = [format_interval(r[f"{m}_ci_low"], r[f"{m}_ci_high"]) for _, r in s.iterrows()]
            out[f"{name} vs {table.baseline}"] = _comparisons(s, m)
        if m in paper_metrics:
            out[f"{name} paper"] = [format_value(v) for v in s[f"{m}_paper"]]
            out[f"{name} Δ"] = [format_delta(v) for v in s[f"{m}_delta"]]
    out["trials done"] = _trial_counts(s)
    return out


def category_display(table: StudyTable, metric: str) -> pd.DataFrame:
    """Per-category breakdown of one metric: categories (rows) x conditions (columns), then the mean row."""
    per = table.per_category
    columns = list(table.summary["label"])
    rows = []
    s = table.summary
    no_masks = dict(zip(s["label"], s.get(f"{metric}_no_masks", pd.Series(False, index=s.index))))
    for category in table.categories:
        cells = per[per["category"] == category].set_index("label").reindex(columns)
        rows.append([category] + [NO_MASKS if no_masks.get(label) and _nan(r[metric]) else
                                  format_value(r[metric], r[f"{metric}_std"], r[f"{metric}_n_seeds"],
                                               r["n_seeds_expected"]) for label, r in cells.iterrows()])
    rows.append(["mean"] + [_cell(r, metric) for _, r in s.iterrows()])
    return pd.DataFrame(rows, columns=["category", *columns])


def category_numbers(table: StudyTable, metric: str) -> pd.DataFrame:
    """The numbers behind category_display, long form (for the CSV)."""
    per = table.per_category
    keep = [*table.conditions, "label", "category", metric, f"{metric}_std", f"{metric}_n_seeds", "n_seeds_expected"]
    return per[keep].reset_index(drop=True)


def to_markdown(frame: pd.DataFrame, title: str, notes: list[str] | None = None) -> str:
    """A bold title line, a pipe table (cells kept verbatim) and optional note lines."""
    body = frame.to_markdown(index=False, disable_numparse=True,
                             colalign=["left"] + ["right"] * (frame.shape[1] - 1))
    lines = [f"**{title}**", "", body]
    if notes:
        lines += [""] + [f"{note}  " for note in notes]
    return "\n".join(lines) + "\n"


def to_latex(frame: pd.DataFrame, title: str) -> str:
    """A booktabs tabular (\\toprule / \\midrule / \\bottomrule) with the title as a comment line."""
    spec = "l" + "r" * (frame.shape[1] - 1)
    lines = [f"% {latex_escape(title)}", f"\\begin{{tabular}}{{{spec}}}", "\\toprule",
             " & ".join(latex_escape(str(c)) for c in frame.columns) + r" \\", "\\midrule"]
    for _, row in frame.iterrows():
        lines.append(" & ".join(latex_escape(str(v)) for v in row) + r" \\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


_LATEX = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "±": r"$\pm$", "–": "--", "−": "$-$", "Δ": r"$\Delta$", "λ": r"$\lambda$", "·": r"$\cdot$",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX specials and write the few non-ASCII symbols of the tables in math mode."""
    parts = text.split("λs")
    return r"$\lambda_s$".join("".join(_LATEX.get(ch, ch) for ch in part) for part in parts)


def write_table(frame: pd.DataFrame, numbers: pd.DataFrame, stem: Path, title: str,
                notes: list[str] | None = None) -> dict[str, Path]:
    """Write stem.md, stem.tex (display strings) and stem.csv (numbers); returns the paths by format."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = {"md": stem.with_suffix(".md"), "tex": stem.with_suffix(".tex"), "csv": stem.with_suffix(".csv")}
    paths["md"].write_text(to_markdown(frame, title, notes), encoding="utf-8")
    paths["tex"].write_text(to_latex(frame, title), encoding="utf-8")
    numbers.to_csv(paths["csv"], index=False, na_rep="")
    return paths


def write_study(table: StudyTable, folder: Path) -> dict[str, dict[str, Path]]:
    """All table files of one study: the main table and one per-category table per metric."""
    notes = [table.missing.sentence()]
    if table.has_paper:
        notes.append(f"{PAPER_NOTE}." + ("" if table.dataset == "mvtec" else
                                          f" This study ran on {table.dataset}: Δ is not like-for-like."))
    written = {"main": write_table(summary_display(table), table.summary, folder / table.name, table_title(table),
                                   notes)}
    for metric in table.spec.metrics:
        title = f"{table_title(table)}, per category: {METRIC_NAMES[metric]}"
        written[metric] = write_table(category_display(table, metric), category_numbers(table, metric),
                                      folder / f"{table.name}-per_category-{metric}", title, notes[:1])
    return written


def table_title(table: StudyTable) -> str:
    return f"{table.spec.title} ({table.dataset}, preset {table.preset})"


NO_MASKS = "n/a (no masks)"


def _cell(row: pd.Series, metric: str) -> str:
    """A summary cell: the value, or "n/a (no masks)" for a pixel metric of data without pixel masks."""
    if row.get(f"{metric}_no_masks", False) and _nan(row[metric]):
        return NO_MASKS
    return format_value(row[metric], row[f"{metric}_std"], row[f"{metric}_n_seeds"], row["n_seeds_expected"])


def _comparisons(summary: pd.DataFrame, metric: str) -> list[str]:
    return [format_comparison(r[f"{metric}_vs_base"], r[f"{metric}_vs_base_low"], r[f"{metric}_vs_base_high"],
                              r[f"{metric}_vs_base_sig"], r.get(f"{metric}_vs_base_fewer_seeds", False))
            for _, r in summary.iterrows()]


def _trial_counts(summary: pd.DataFrame) -> list[str]:
    return [f"{d}/{e}" for d, e in zip(summary["n_trials_done"], summary["n_trials_expected"])]


def _nan(value: Any) -> bool:
    try:
        return value is None or bool(pd.isna(value))
    except (TypeError, ValueError):
        return False
