"""The map gallery picks images by the baseline's scores and shows those same images for every condition."""

import numpy as np

from dsr.evaluation.records import EvaluationRecords
from reports.gallery import choose_images, draw_gallery


def _records(scores, labels, has_masks=True) -> EvaluationRecords:
    n = len(scores)
    names = np.array([("good" if lab == 0 else "crack") + f"/{i:03d}.png" for i, lab in enumerate(labels)])
    maps = (np.linspace(0, 255, n)[:, None, None] * np.ones((n, 8, 8))).astype(np.uint8)
    return EvaluationRecords(names, np.array(["good" if lab == 0 else "crack" for lab in labels]),
                             np.array(labels, np.int8), np.array(scores, np.float32), np.zeros((n, 4), np.float16),
                             np.zeros((n, 4), bool), has_masks, 0, np.zeros((n, 8, 8, 3), np.uint8),
                             np.zeros((n, 8, 8), np.uint8), maps)


def test_picks_are_the_baselines_extremes() -> None:
    base = _records([0.1, 0.7, 0.3, 0.9, 0.5], [0, 0, 1, 1, 1])
    picks = choose_images(base)
    assert [p.path for p in picks] == ["crack/003.png", "crack/002.png", "good/001.png"]


def test_every_condition_shows_the_same_images(tmp_path) -> None:
    base = _records([0.1, 0.7, 0.3, 0.9, 0.5], [0, 0, 1, 1, 1])
    other = _records([0.9, 0.1, 0.8, 0.2, 0.3], [0, 0, 1, 1, 1])  # other scores, same test images
    figure = draw_gallery({"DSR": base, "DSR_random": other}, "DSR", "toy")
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert [t.splitlines()[1] for t in titles] == ["crack/003.png", "crack/002.png", "good/001.png"]
    # rows: image, ground truth, DSR, DSR_random; every map panel is labelled with its condition's score
    assert len(figure.axes) == 4 * 3
    score_texts = [t.get_text() for ax in figure.axes[6:] for t in ax.texts]
    # row DSR: crack/003, crack/002, good/001 with DSR's scores; row DSR_random: the same images, its scores
    assert score_texts == ["0.900", "0.300", "0.700", "0.200", "0.800", "0.100"]
    figure.savefig(tmp_path / "gallery.png")
    assert (tmp_path / "gallery.png").stat().st_size > 1000


def test_no_masks_drops_the_ground_truth_row() -> None:
    base = _records([0.1, 0.9], [0, 1], has_masks=False)
    figure = draw_gallery({"DSR": base}, "DSR", "toy")
    assert len(figure.axes) == 2 * 3  # image row + one map row; three picks (the one anomalous image twice)
