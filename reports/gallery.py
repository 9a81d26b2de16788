"""A gallery of anomaly maps: the same few test images of one category under every condition of a study.

The images are chosen once, by the baseline condition's scores: its highest-scored anomalous image (the easiest
catch), its lowest-scored anomalous image (the hardest) and its highest-scored normal image (the worst false
alarm). Every condition then shows its own map of those images, so maps compare side by side. Everything comes
from the trials' records (64 px thumbnails); nothing is recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from dsr.evaluation.records import EvaluationRecords

MAP_COLOURS = "inferno"  # perceptually uniform


@dataclass(frozen=True)
class Pick:
    title: str
    path: str  # the image's name in the records ("<defect>/<file>")


def choose_images(baseline: EvaluationRecords) -> list[Pick]:
    """Highest- and lowest-scored anomalous image and highest-scored normal image of the baseline's records."""
    scores, labels = baseline.image_scores, baseline.labels
    picks = []
    anomalous, normal = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    if len(anomalous):
        picks.append(Pick("highest-scored anomalous", str(baseline.paths[anomalous[np.argmax(scores[anomalous])]])))
        picks.append(Pick("lowest-scored anomalous", str(baseline.paths[anomalous[np.argmin(scores[anomalous])]])))
    if len(normal):
        picks.append(Pick("highest-scored normal", str(baseline.paths[normal[np.argmax(scores[normal])]])))
    return picks


def draw_gallery(records_by_condition: dict[str, EvaluationRecords], baseline: str, category: str) -> Figure:
    """Rows: the image, its ground-truth mask (where the data has masks), then one map per condition; columns: the
    chosen images. Each map's panel carries that condition's image score."""
    picks = choose_images(records_by_condition[baseline])
    if not picks:
        raise ValueError("the baseline's records hold no test images")
    reference = records_by_condition[baseline]
    index = {str(p): i for i, p in enumerate(reference.paths)}
    show_masks = reference.has_masks
    rows = ["image"] + (["ground truth"] if show_masks else []) + list(records_by_condition)
    fig, axes = plt.subplots(len(rows), len(picks), figsize=(2.0 * len(picks) + 1.2, 1.9 * len(rows)),
                             squeeze=False)
    for col, pick in enumerate(picks):
        i = index[pick.path]
        axes[0, col].imshow(reference.images[i])
        axes[0, col].set_title(f"{pick.title}\n{pick.path}", fontsize=7)
        if show_masks:
            axes[1, col].imshow(reference.masks[i], cmap="gray", vmin=0, vmax=255)
        for r, (condition, records) in enumerate(records_by_condition.items(), start=len(rows) - len(
                records_by_condition)):
            position = {str(p): k for k, p in enumerate(records.paths)}.get(pick.path)
            ax = axes[r, col]
            if position is None:
                ax.text(0.5, 0.5, "not in this\ntrial's test set", ha="center", va="center", fontsize=7)
                continue
            ax.imshow(reference.images[i])
            ax.imshow(records.maps[position], cmap=MAP_COLOURS, vmin=0, vmax=255, alpha=0.6)
            ax.text(0.03, 0.97, f"{records.image_scores[position]:.3f}", transform=ax.transAxes, va="top",
                    ha="left", fontsize=7, color="white", bbox=dict(facecolor="black", alpha=0.5, pad=1))
    for r, name in enumerate(rows):
        axes[r, 0].set_ylabel(name, fontsize=8)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"Anomaly maps, {category} (images chosen by {baseline}'s scores; score top left)", fontsize=9)
    fig.tight_layout()
    return fig
