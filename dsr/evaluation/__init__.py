"""Evaluation of DSR: anomaly-detection metrics and a loop that runs a model over a test set."""

from dsr.evaluation.evaluate import METRIC_NAMES, evaluate_model, mean_over_categories, predict_all
from dsr.evaluation.metrics import aupro, center_crop, image_metrics, pixel_metrics
from dsr.evaluation.records import EvaluationRecords, evaluate_with_records, load_records, save_records

__all__ = [
    "EvaluationRecords", "evaluate_with_records", "load_records", "save_records",
    "METRIC_NAMES", "aupro", "center_crop", "evaluate_model", "image_metrics", "mean_over_categories",
    "pixel_metrics", "predict_all",
]
