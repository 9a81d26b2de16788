"""Datasets for DSR: MVTec AD, KSDD2, a generic folder and two offline demos (easy, hard), as `AnomalyDataset`s."""

from dsr.data.build import DATASET_KINDS, build_dataset, list_categories
from dsr.data.dataset import MVTEC_CATEGORIES, AnomalyDataset, DataTensors, Sample, load_all
from dsr.data.io import CHANNEL_ORDERS, IMAGE_EXTENSIONS
from dsr.data.kinds import DEMO_KINDS, is_demo_kind
from dsr.data.ksdd2 import ksdd2
from dsr.data.mvtec import folder, mvtec

__all__ = [
    "AnomalyDataset", "CHANNEL_ORDERS", "DATASET_KINDS", "DEMO_CATEGORIES", "DEMO_KINDS", "DataTensors",
    "IMAGE_EXTENSIONS", "MVTEC_CATEGORIES", "Sample", "build_dataset", "build_demo", "build_demo_kind", "folder",
    "is_demo_kind", "ksdd2", "list_categories", "load_all", "mvtec",
]


def __getattr__(name: str):
    # dsr.data.demo is imported on first use, not here, so that `python -m dsr.data.demo` runs it only once
    if name in ("build_demo", "build_demo_kind", "DEMO_CATEGORIES"):
        from dsr.data import demo

        return getattr(demo, name)
    raise AttributeError(f"module 'dsr.data' has no attribute {name!r}")
