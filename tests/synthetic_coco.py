"""A small 3-class COCO-format dataset on disk, registered under a unique name (for run tests)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

from mrdetr.data import DatasetCatalog, MetadataCatalog, register_coco_instances
from mrdetr.data.synthetic import generate_synthetic_dataset


@contextlib.contextmanager
def registered_coco_folder(root: Path, num_classes: int = 3) -> Iterator[str]:
    """Write 4 train / 2 val images (64 px) with ``num_classes`` classes to ``root`` and register
    them as ``<name>_train`` / ``<name>_val``; yields ``<name>`` and unregisters on exit."""
    paths = generate_synthetic_dataset(
        root, num_train=4, num_val=2, image_size=64, num_classes=num_classes, progress=False
    )
    name = f"coco{num_classes}_{uuid.uuid4().hex[:8]}"
    splits = ("train", "val")
    for split in splits:
        register_coco_instances(
            f"{name}_{split}", {}, paths[f"{split}_json"], paths[f"{split}_images"]
        )
    try:
        yield name
    finally:
        for split in splits:
            DatasetCatalog.remove(f"{name}_{split}")
            MetadataCatalog.remove(f"{name}_{split}")
