"""COCO-format instance annotations -> detectron2-style dataset dicts, and their registration."""

from __future__ import annotations

import contextlib
import io
import logging
import os
from typing import Any

from pycocotools.coco import COCO

from . import _coco_json as coco_json
from .catalog import DatasetCatalog, MetadataCatalog
from .detection_utils import BoxMode

__all__ = ["load_coco_json", "register_coco_instances"]

logger = logging.getLogger(__name__)

_REQUIRED_ANNOTATION_KEYS = ("id", "image_id", "bbox", "category_id")  # pycocotools needs the id
_REQUIRED_CATEGORY_KEYS = ("id", "name")
_MIN_POLYGON_COORDS = 6


class _NotCocoError(ValueError):
    pass


def _segmentation_problem(segm: Any) -> str | None:
    """Why ``segm`` is neither polygons nor an RLE dict (None when it is one)."""
    if isinstance(segm, list):
        if all(isinstance(p, list) and all(coco_json.is_finite_number(v) for v in p) for p in segm):
            return None
        return "polygons must be lists of numbers"
    if isinstance(segm, dict):
        size, counts = segm.get("size"), segm.get("counts")
        if not (
            isinstance(size, list) and len(size) == 2 and all(coco_json.is_int_id(v) for v in size)
        ):
            return "an RLE needs 'size' [height, width]"
        if isinstance(counts, str) or (
            isinstance(counts, list) and all(coco_json.is_int_id(v) and v >= 0 for v in counts)
        ):
            return None
        return "an RLE needs 'counts' (a string or a list of non-negative ints)"
    return f"a {type(segm).__name__}, expected polygons or an RLE dict"


def _validate(data: Any, json_file: str) -> None:
    """Raise one clear error when ``data`` is not a COCO instances file."""
    fail = coco_json.validation_error(json_file, "COCO instances", _NotCocoError)
    coco_json.check_images_and_categories(data, fail, _REQUIRED_CATEGORY_KEYS)
    cat_ids = {c["id"] for c in data["categories"]}
    img_ids = {img["id"] for img in data["images"]}
    ann_ids: set[Any] = set()
    for anno in data["annotations"]:
        ident = anno.get("id", "?")
        missing = [k for k in _REQUIRED_ANNOTATION_KEYS if k not in anno]
        if missing:
            fail(f"annotation {ident} lacks {missing}")
        if not coco_json.is_int_id(anno["id"]):
            fail(f"annotation id {anno['id']!r} is not an int")
        if anno["id"] in ann_ids:
            fail(f"annotation id {anno['id']} is not unique")
        ann_ids.add(anno["id"])
        if not coco_json.is_xywh_box(anno["bbox"]):
            fail(
                f"annotation {ident} has bad bbox {anno['bbox']} (expected [x, y, w, h], w, h >= 0)"
            )
        if not coco_json.is_int_id(anno["category_id"]) or anno["category_id"] not in cat_ids:
            fail(f"annotation {ident} has unknown category_id {anno['category_id']!r}")
        if not coco_json.is_int_id(anno["image_id"]) or anno["image_id"] not in img_ids:
            fail(f"annotation {ident} refers to unknown image_id {anno['image_id']!r}")
        if not coco_json.is_finite_number(anno.get("iscrowd", 0)):
            fail(f"annotation {ident} has iscrowd {anno['iscrowd']!r}, expected 0 or 1")
        problem = _segmentation_problem(anno["segmentation"]) if "segmentation" in anno else None
        if problem:
            fail(f"annotation {ident} has a bad 'segmentation': {problem}")


def _convert_segmentation(segm: Any) -> Any | None:
    """Keep valid polygons (>= 3 points) or an RLE dict; None when nothing valid remains."""
    if isinstance(segm, dict):
        return segm if "counts" in segm and "size" in segm else None
    if isinstance(segm, list):
        polygons = [p for p in segm if len(p) % 2 == 0 and len(p) >= _MIN_POLYGON_COORDS]
        return polygons or None
    return None


def _zero_size(bbox: list[float]) -> bool:
    """Whether a COCO ``[x, y, w, h]`` box has no area (it cannot be matched or supervised)."""
    return bbox[2] <= 0 or bbox[3] <= 0


def _report_zero_size(
    num_dropped: int, num_annotations: int, json_file: str, dataset_name: str | None
) -> None:
    """Warn about dropped zero-size boxes; raise when they were every annotation of the file."""
    if not num_dropped:
        return
    name = f"dataset '{dataset_name}' ({json_file})" if dataset_name else f"'{json_file}'"
    if num_dropped == num_annotations:
        raise ValueError(
            f"{name}: all {num_annotations} annotations have a zero-size box (w or h <= 0), "
            "nothing is left to train on; check that 'bbox' is [x, y, width, height] in pixels"
        )
    logger.warning(
        "%s: dropped %d of %d annotations with a zero-size box (w or h <= 0)",
        name,
        num_dropped,
        num_annotations,
    )


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
        ValueError: the file is not valid JSON or not a COCO instances file (message says why),
            or every annotation has a zero-size box (the message names the dataset).
    """
    meta_paths = {
        "json_file": coco_json.metadata_path(json_file),
        "image_root": coco_json.metadata_path(image_root),
    }
    json_file = os.fspath(json_file)
    image_root = os.fspath(image_root)
    data = coco_json.read_json(json_file, "COCO json")
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
    num_degenerate = 0
    for img_id in sorted(coco.imgs):
        img = coco.imgs[img_id]
        record = coco_json.image_record(img, image_root)
        annotations = []
        for anno in coco.imgToAnns.get(img_id, []):
            if _zero_size(anno["bbox"]):
                num_degenerate += 1
                continue
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
    _report_zero_size(num_degenerate, len(data["annotations"]), json_file, dataset_name)
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
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    if name in DatasetCatalog:
        known = MetadataCatalog.get(name)
        if (known.get("json_file"), known.get("image_root")) == (json_file, image_root):
            return  # the same registration again (a config file loaded twice)
    paths = {"json_file": json_file, "image_root": image_root}
    coco_json.register_lazy(
        name,
        "register_coco_instances",
        lambda dataset: load_coco_json(paths["json_file"], paths["image_root"], dataset),
        {**paths, "evaluator_type": "coco", **metadata},
    )
