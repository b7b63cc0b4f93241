"""COCO-format instance annotations -> detectron2-style dataset dicts, and their registration."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
from typing import Any

from pycocotools.coco import COCO

from .catalog import DatasetCatalog, MetadataCatalog
from .detection_utils import BoxMode

__all__ = ["load_coco_json", "register_coco_instances"]

logger = logging.getLogger(__name__)

_REQUIRED_TOP_KEYS = ("images", "annotations", "categories")
_REQUIRED_IMAGE_KEYS = ("id", "file_name", "height", "width")
_REQUIRED_ANNOTATION_KEYS = ("image_id", "bbox", "category_id")
_MIN_POLYGON_COORDS = 6


class _NotCocoError(ValueError):
    pass


def _read_json(json_file: str | os.PathLike) -> dict[str, Any]:
    json_file = os.fspath(json_file)
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"COCO json file '{json_file}' does not exist")
    try:
        with open(json_file, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"'{json_file}' is not a valid JSON file: {e}") from e
    return data


def _validate(data: Any, json_file: str) -> None:
    """Raise one clear error when ``data`` is not a COCO instances file."""

    def fail(what: str) -> None:
        raise _NotCocoError(f"'{json_file}' is not a COCO instances file: {what}")

    if not isinstance(data, dict):
        fail(f"top level is a {type(data).__name__}, expected an object")
    for key in _REQUIRED_TOP_KEYS:
        if not isinstance(data.get(key), list):
            fail(f"missing list '{key}' (found keys: {sorted(data)})")
    for img in data["images"]:
        missing = [k for k in _REQUIRED_IMAGE_KEYS if k not in img]
        if missing:
            fail(f"image entry {img.get('id', '?')} lacks {missing}")
    for cat in data["categories"]:
        if "id" not in cat or "name" not in cat:
            fail(f"category entry {cat} lacks 'id' or 'name'")
    cat_ids = {c["id"] for c in data["categories"]}
    img_ids = {img["id"] for img in data["images"]}
    ann_ids: set[Any] = set()
    for anno in data["annotations"]:
        ident = anno.get("id", "?")
        missing = [k for k in _REQUIRED_ANNOTATION_KEYS if k not in anno]
        if missing:
            fail(f"annotation {ident} lacks {missing}")
        if "id" in anno:
            if anno["id"] in ann_ids:
                fail(f"annotation id {anno['id']} is not unique")
            ann_ids.add(anno["id"])
        bbox = anno["bbox"]
        if (
            not isinstance(bbox, list)
            or len(bbox) != 4
            or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox)
            or bbox[2] < 0
            or bbox[3] < 0
        ):
            fail(f"annotation {ident} has bad bbox {bbox} (expected [x, y, w, h], w, h >= 0)")
        if anno["category_id"] not in cat_ids:
            fail(f"annotation {ident} has unknown category_id {anno['category_id']}")
        if anno["image_id"] not in img_ids:
            fail(f"annotation {ident} refers to unknown image_id {anno['image_id']}")


def _convert_segmentation(segm: Any) -> Any | None:
    """Keep valid polygons (>= 3 points) or an RLE dict; None when nothing valid remains."""
    if isinstance(segm, dict):
        return segm if "counts" in segm and "size" in segm else None
    if isinstance(segm, list):
        polygons = [p for p in segm if len(p) % 2 == 0 and len(p) >= _MIN_POLYGON_COORDS]
        return polygons or None
    return None


def _metadata_path(path: str | os.PathLike) -> str | os.PathLike:
    """A plain string, except for paths resolved on use (builtin datasets), which are kept."""
    return path if getattr(path, "resolved_on_use", False) else os.fspath(path)


def load_coco_json(
    json_file: str | os.PathLike, image_root: str | os.PathLike, dataset_name: str | None = None
) -> list[dict[str, Any]]:
    """Load a COCO instances JSON into detectron2-style dataset dicts.

    Category ids (arbitrary) are mapped to contiguous ids 0..K-1 in sorted id order. Images without
    annotations are kept (``get_detection_dataset_dicts(filter_empty=True)`` drops them later).

    Args:
        json_file: path of the COCO instances JSON.
        image_root: folder that the images' ``file_name`` entries are relative to.
        dataset_name: when given, set the metadata of this dataset: ``thing_classes``,
            ``thing_dataset_id_to_contiguous_id``, ``json_file``, ``image_root``,
            ``evaluator_type="coco"``.

    Returns:
        One dict per image: ``file_name`` (absolute), ``height``, ``width``, ``image_id`` and
        ``annotations`` (each ``bbox`` [x, y, w, h], ``bbox_mode="XYWH_ABS"``, contiguous
        ``category_id``, ``iscrowd``, and ``segmentation`` when present).

    Raises:
        FileNotFoundError: ``json_file`` does not exist.
        ValueError: the file is not valid JSON or not a COCO instances file (message says why).
    """
    meta_paths = {
        "json_file": _metadata_path(json_file),
        "image_root": _metadata_path(image_root),
    }
    json_file = os.fspath(json_file)
    image_root = os.fspath(image_root)
    data = _read_json(json_file)
    _validate(data, json_file)

    coco = COCO()
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.dataset = data
        coco.createIndex()

    cat_ids = sorted(coco.getCatIds())
    id_map = {cat_id: i for i, cat_id in enumerate(cat_ids)}
    thing_classes = [c["name"] for c in coco.loadCats(cat_ids)]
    if dataset_name is not None:
        MetadataCatalog.get(dataset_name).set(
            thing_classes=thing_classes,
            thing_dataset_id_to_contiguous_id=id_map,
            evaluator_type="coco",
            **meta_paths,
        )

    dataset_dicts = []
    num_dropped_segm = 0
    for img_id in sorted(coco.imgs):
        img = coco.imgs[img_id]
        record: dict[str, Any] = {
            "file_name": os.path.abspath(os.path.join(image_root, img["file_name"])),
            "height": int(img["height"]),
            "width": int(img["width"]),
            "image_id": img_id,
        }
        annotations = []
        for anno in coco.imgToAnns.get(img_id, []):
            obj: dict[str, Any] = {
                "bbox": [float(v) for v in anno["bbox"]],
                "bbox_mode": BoxMode.XYWH_ABS.value,
                "category_id": id_map[anno["category_id"]],
                "iscrowd": int(anno.get("iscrowd", 0)),
            }
            if "segmentation" in anno:
                segm = _convert_segmentation(anno["segmentation"])
                if segm is None:
                    num_dropped_segm += 1
                    continue
                obj["segmentation"] = segm
            annotations.append(obj)
        record["annotations"] = annotations
        dataset_dicts.append(record)
    if num_dropped_segm:
        logger.warning(
            "%s: dropped %d annotations without a valid segmentation", json_file, num_dropped_segm
        )
    logger.info("Loaded %d images in COCO format from %s", len(dataset_dicts), json_file)
    return dataset_dicts


def register_coco_instances(
    name: str,
    metadata: dict[str, Any],
    json_file: str | os.PathLike,
    image_root: str | os.PathLike,
) -> None:
    """Register a COCO-format dataset under ``name`` (loaded lazily, on ``DatasetCatalog.get``).

    Registering the same name with the same files again does nothing, so a config file may register
    its datasets (it is loaded once per process and again by the tools).

    Args:
        name: dataset name, e.g. ``"my_dataset_train"``.
        metadata: extra metadata (may be empty); ``thing_classes`` and the id map come from the JSON.
        json_file: path of the COCO instances JSON.
        image_root: folder of the images.
    """
    if not isinstance(name, str):
        raise TypeError(f"register_coco_instances: name must be a str, got {type(name).__name__}")
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    if name in DatasetCatalog:
        known = MetadataCatalog.get(name)
        if (known.get("json_file"), known.get("image_root")) == (json_file, image_root):
            return  # the same registration again (a config file loaded twice)
    DatasetCatalog.register(name, lambda: load_coco_json(json_file, image_root, name))
    MetadataCatalog.get(name).set(
        json_file=json_file, image_root=image_root, evaluator_type="coco", **metadata
    )
