"""Datasets (COCO format, registry), augmentation, mappers, samplers and loaders.

Importing this package registers the builtin datasets (``coco_2017_{train,val}``,
``synthetic_{train,val}``, ``coco_2017_{train,val}_panoptic``, ``synthetic_panoptic_{train,val}``)
without touching the disk.
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
from .panoptic import (
    PanopticDatasetMapper,
    id2rgb,
    load_coco_panoptic_json,
    register_coco_panoptic,
    rgb2id,
)
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
    "PanopticDatasetMapper",
    "RandomSizeCrop",
    "ResizeShortestEdge",
    "TrainDetectionLoader",
    "TrainingSampler",
    "build_detection_test_loader",
    "build_detection_train_loader",
    "build_detr_test_transform",
    "build_detr_train_transform",
    "ensure_synthetic_dataset",
    "ensure_synthetic_panoptic_dataset",
    "generate_synthetic_dataset",
    "generate_synthetic_panoptic_dataset",
    "get_datasets_root",
    "get_detection_dataset_dicts",
    "id2rgb",
    "load_coco_json",
    "load_coco_panoptic_json",
    "read_image",
    "register_all_builtins",
    "register_coco_instances",
    "register_coco_panoptic",
    "rgb2id",
]

register_all_builtins()

# Imported lazily so that ``python -m mrdetr.data.synthetic[_panoptic]`` does not find the module
# pre-imported. Name -> module.
_LAZY = {
    "ensure_synthetic_dataset": "synthetic",
    "generate_synthetic_dataset": "synthetic",
    "ensure_synthetic_panoptic_dataset": "synthetic_panoptic",
    "generate_synthetic_panoptic_dataset": "synthetic_panoptic",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'mrdetr.data' has no attribute '{name}'")
