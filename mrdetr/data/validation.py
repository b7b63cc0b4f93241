"""Checks of a run's model config against its data, before the first iteration.

A wrong ``model.num_classes`` otherwise trains to the end and fails in evaluation (or stops at the
first batch with a message that does not name the key); a mask model on a dataset without masks, or a
dataset whose every box is degenerate, would train on nothing. :func:`check_data_against_model` turns
each into one error naming the config key, the dataset and what was expected.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .catalog import DatasetCatalog, MetadataCatalog
from .detection_utils import annotation_boxes_xyxy
from .transforms import FilterEmptyBoxes

__all__ = [
    "DataConfigError",
    "DataSummary",
    "check_class_count",
    "check_data_against_model",
    "dataset_class_names",
    "summarize_dataset",
]

logger = logging.getLogger(__name__)

_PANOPTIC_EVALUATOR_TYPE = "coco_panoptic_seg"


class DataConfigError(ValueError):
    """The model config does not fit the data (the message names the key and the dataset)."""


@dataclass(frozen=True)
class DataSummary:
    """What a list of dataset dicts holds (non-crowd annotations only).

    Attributes:
        num_images: images.
        num_boxes: non-crowd boxes.
        num_degenerate: boxes whose width or height is not above the training filter's minimum
            (``FilterEmptyBoxes``): the training augmentation drops them.
        num_with_masks: boxes with a ``segmentation``, or all boxes of panoptic images.
        max_category_id: largest contiguous class id, -1 without boxes.
    """

    num_images: int
    num_boxes: int
    num_degenerate: int
    num_with_masks: int
    max_category_id: int


def summarize_dataset(dicts: Sequence[dict[str, Any]]) -> DataSummary:
    """Count the boxes, degenerate boxes and masks of ``dicts`` (detectron2-style dataset dicts)."""
    min_side = FilterEmptyBoxes().min_size
    boxes = degenerate = masks = 0
    max_id = -1
    for record in dicts:
        annotations = [a for a in record.get("annotations", []) if not int(a.get("iscrowd", 0))]
        if not annotations:
            continue
        xyxy = annotation_boxes_xyxy(annotations, record.get("file_name", "?"))
        sides = (xyxy[:, 2:] - xyxy[:, :2]).min(dim=1).values
        boxes += len(annotations)
        degenerate += int((sides <= min_side).sum())
        panoptic = "pan_seg_file_name" in record
        masks += sum(1 for a in annotations if panoptic or "segmentation" in a)
        max_id = max(max_id, max(int(a["category_id"]) for a in annotations))
    return DataSummary(len(dicts), boxes, degenerate, masks, max_id)


def dataset_class_names(name: str, *, load: bool = True) -> list[str] | None:
    """The names of the classes a model trained on dataset ``name`` predicts.

    ``thing_classes``, or ``stuff_classes`` (all categories) for panoptic datasets. COCO-format
    datasets set them when loaded: with ``load``, a registered dataset is loaded first, so that a
    builtin name whose files follow the datasets root (``MRDETR_DATASETS``) reports the classes of
    the files it reads now.

    Returns:
        The names, or None when the dataset has none.
    """

    def names() -> list[str] | None:
        metadata = MetadataCatalog.get(name)
        panoptic = metadata.get("evaluator_type") == _PANOPTIC_EVALUATOR_TYPE
        found = metadata.get("stuff_classes" if panoptic else "thing_classes")
        return list(found) if found is not None else None

    if load and name in DatasetCatalog:
        DatasetCatalog.get(name)
    return names()


def check_class_count(
    num_classes: int, dataset: str, key: str, classes: Sequence[str] | None, max_id: int = -1
) -> None:
    """Raise when ``model.num_classes`` differs from the dataset's class count.

    Args:
        num_classes: the model's ``num_classes``.
        dataset: dataset name (for the message).
        key: the config key holding the dataset name, e.g. ``dataloader.train.dataset``.
        classes: the dataset's class names (None: unknown, then only ``max_id`` is checked).
        max_id: largest contiguous class id in the data.

    Raises:
        ValueError: the counts differ (or a label is not below ``num_classes``).
    """
    if classes is not None and len(classes) != num_classes:
        shown = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
        raise DataConfigError(
            f"model.num_classes={num_classes} but dataset '{dataset}' ({key}) has "
            f"{len(classes)} classes ({shown}): set model.num_classes={len(classes)}"
        )
    if max_id >= num_classes:
        raise DataConfigError(
            f"model.num_classes={num_classes} but dataset '{dataset}' ({key}) has class id "
            f"{max_id}: set model.num_classes to at least {max_id + 1}"
        )


def _names(dataset: Any) -> list[str]:
    if isinstance(dataset, str):
        return [dataset]
    if isinstance(dataset, Sequence) and all(isinstance(d, str) for d in dataset):
        return list(dataset)
    return []  # a list of dataset dicts given directly: no names, no metadata


def _get(node: Any, key: str, default: Any = None) -> Any:
    try:
        return node.get(key, default)
    except AttributeError:
        return default


def check_data_against_model(cfg: Any, train_dicts: Sequence[dict[str, Any]]) -> DataSummary:
    """Check ``cfg.model`` against the training data (``train_dicts``) and the test dataset.

    Checks: ``model.num_classes`` equals the class count of ``dataloader.train.dataset`` and of
    ``dataloader.test.dataset``; a mask model (``model.mask_head`` set) has
    ``dataloader.train.mapper.mask_on=True`` and masks in its data; not every box is degenerate.
    Degenerate boxes are counted and logged.

    Returns:
        The summary of the training data.

    Raises:
        ValueError: one line naming the config key, the dataset and what was expected.
    """
    summary = summarize_dataset(train_dicts)
    loaders = _get(cfg, "dataloader", {})
    train = _get(loaders, "train", {})
    train_names = _names(_get(train, "dataset"))
    label = ", ".join(train_names) or "(dataset dicts)"
    num_classes = _get(_get(cfg, "model", {}), "num_classes")
    if num_classes is not None:
        for role in ("train", "test"):
            for name in _names(_get(_get(loaders, role, {}), "dataset")):
                classes = dataset_class_names(name, load=role == "test")
                check_class_count(int(num_classes), name, f"dataloader.{role}.dataset", classes)
        check_class_count(
            int(num_classes), label, "dataloader.train.dataset", None, summary.max_category_id
        )
    if _get(_get(cfg, "model", {}), "mask_head") is not None:
        if not _get(_get(train, "mapper", {}), "mask_on", False):
            raise DataConfigError(
                "the model predicts masks (model.mask_head is set) but "
                "dataloader.train.mapper.mask_on is False: set it to True"
            )
        if summary.num_boxes and not summary.num_with_masks:
            raise DataConfigError(
                f"the model predicts masks (model.mask_head is set) but no annotation of dataset "
                f"'{label}' (dataloader.train.dataset) has a 'segmentation'"
            )
    if summary.num_boxes and summary.num_degenerate == summary.num_boxes:
        raise DataConfigError(
            f"every one of the {summary.num_boxes} boxes of dataset '{label}' "
            "(dataloader.train.dataset) has zero width or height: check the 'bbox' entries "
            "([x, y, width, height] in COCO files)"
        )
    if summary.num_degenerate:
        logger.warning(
            "dataset '%s': %d of %d boxes have zero width or height; training drops them",
            label,
            summary.num_degenerate,
            summary.num_boxes,
        )
    logger.info(
        "Training data '%s': %d images, %d boxes, largest class id %d.",
        label,
        summary.num_images,
        summary.num_boxes,
        summary.max_category_id,
    )
    return summary
