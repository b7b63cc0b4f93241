"""Datasets (COCO format, registry), augmentation, mappers, samplers and loaders.

Importing this package registers the builtin datasets (``coco_2017_{train,val}``,
``synthetic_{train,val}``) without touching the disk.
"""

from __future__ import annotations

from typing import Any

from .build import (
    DetectionLoader,
    TrainDetectionLoader,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from .builtin import get_datasets_root, register_all_builtins
from .catalog import DatasetCatalog, Metadata, MetadataCatalog
from .coco import load_coco_json, register_coco_instances
from .detection_utils import BadImageError, BoxMode, read_image
from .mapper import DetrDatasetMapper
from .samplers import InferenceSampler, TrainingSampler
from .transforms import (
    FilterEmptyBoxes,
    RandomSizeCrop,
    ResizeShortestEdge,
    build_detr_test_transform,
    build_detr_train_transform,
)

__all__ = [
    "BadImageError",
    "BoxMode",
    "DatasetCatalog",
    "DetectionLoader",
    "DetrDatasetMapper",
    "FilterEmptyBoxes",
    "InferenceSampler",
    "Metadata",
    "MetadataCatalog",
    "RandomSizeCrop",
    "ResizeShortestEdge",
    "TrainDetectionLoader",
    "TrainingSampler",
    "build_detection_test_loader",
    "build_detection_train_loader",
    "build_detr_test_transform",
    "build_detr_train_transform",
    "ensure_synthetic_dataset",
    "generate_synthetic_dataset",
    "get_datasets_root",
    "get_detection_dataset_dicts",
    "load_coco_json",
    "read_image",
    "register_all_builtins",
    "register_coco_instances",
]

register_all_builtins()

# Imported lazily so that ``python -m mrdetr.data.synthetic`` does not find the module pre-imported.
_LAZY = {"ensure_synthetic_dataset", "generate_synthetic_dataset"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module 'mrdetr.data' has no attribute '{name}'")
