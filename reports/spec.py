"""Canonical names and orders for the reports: metrics, variants, and what each study's table looks like.

Every table and figure takes its row/column order from here (DomainBed habit), so two reports of the same study
always line up and a test can rely on the order.
"""

from __future__ import annotations

from dataclasses import dataclass

from dsr.variants import VARIANTS as _VARIANT_REGISTRY

# Metrics a trial reports with `stage == "done"` (fractions in [0, 1]; tables show percent).
METRICS: tuple[str, ...] = ("image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "aupro")
METRIC_NAMES: dict[str, str] = {
    "image_auroc": "image AUROC",
    "image_ap": "image AP",
    "pixel_auroc": "pixel AUROC",
    "pixel_ap": "pixel AP",
    "aupro": "AUPRO",
}

# The paper's Table 6 order (the registry's order); unknown variants follow, sorted by name.
VARIANTS: tuple[str, ...] = tuple(_VARIANT_REGISTRY)

# The paper's default strategy is listed first in the sampling study; the others follow by name.
DEFAULT_SAMPLING_STRATEGY = "similarity_bound"

# Human names of the condition columns a table can be indexed by.
CONDITION_NAMES: dict[str, str] = {
    "lambda_s": "λs",
    "variant": "variant",
    "codebook_size": "K",
    "sampling": "sampling strategy",
    "params": "configuration",
    "other_overrides": "other overrides",
}

MISSING = "–"  # the one marker for a cell without a value, in Markdown, LaTeX (as --) and figures


@dataclass(frozen=True)
class StudySpec:
    """How one study (the trial config's `study` value) becomes a table.

    condition: the trial-table column that indexes the study's rows (or columns, for the wide layout).
    primary_fields: DSRConfig override fields that make up the condition (excluded from "other overrides").
    layout: "wide" puts conditions in columns with ours / paper / delta rows (the paper's Table 5);
    "long" puts conditions in rows with ours / paper / delta columns per metric (the paper's Table 6).
    """

    study: str
    stem: str
    title: str
    condition: str
    primary_fields: tuple[str, ...]
    metrics: tuple[str, ...]
    paper_table: int | None
    layout: str


STUDIES: dict[str, StudySpec] = {
    spec.study: spec
    for spec in (
        StudySpec("similarity_bound", "table5", "Table 5: similarity bound λs", "lambda_s",
                  ("similarity_bound",), ("image_auroc",), 5, "wide"),
        StudySpec("ablation", "table6", "Table 6: ablations", "variant",
                  (), ("image_auroc", "pixel_ap"), 6, "long"),
        StudySpec("codebook", "codebook", "Codebook size K", "codebook_size",
                  ("codebook_size",), ("image_auroc", "pixel_ap"), None, "long"),
        StudySpec("sampling", "sampling", "Sampling strategy", "sampling",
                  ("sampling_strategy", "sampling_params"), ("image_auroc", "pixel_ap"), None, "long"),
    )
}
STUDY_ORDER: tuple[str, ...] = tuple(STUDIES)


def study_spec(study: str) -> StudySpec:
    """The spec of a known study, or a generic one (rows = full configuration label) for any other name."""
    if study in STUDIES:
        return STUDIES[study]
    stem = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in study) or "study"
    return StudySpec(study, stem, f"Study '{study}'", "params", (), ("image_auroc", "pixel_ap"), None, "long")
