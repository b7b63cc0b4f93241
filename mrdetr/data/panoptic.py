"""COCO panoptic annotations -> detectron2-style dataset dicts, their registration and mapper.

Every panoptic segment (thing or stuff) becomes one target "instance" with a box and a mask (the
DETR-panoptic formulation), and all categories share ONE contiguous class space: the contiguous id of
a category is its index in the categories sorted by id (detectron2's "standard" panoptic metadata:
``stuff_classes`` names all categories, ``thing_classes`` only the things).
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

from . import _coco_json as coco_json
from .catalog import Metadata, MetadataCatalog
from .detection_utils import BadImageError, BoxMode
from .mapper import DetrDatasetMapper

__all__ = [
    "PANOPTIC_EVALUATOR_TYPE",
    "PanopticDatasetMapper",
    "id2rgb",
    "load_coco_panoptic_json",
    "panoptic_metadata",
    "read_panoptic_ids",
    "register_coco_panoptic",
    "rgb2id",
]

logger = logging.getLogger(__name__)

PANOPTIC_EVALUATOR_TYPE = "coco_panoptic_seg"
_CHANNEL_BASE = 256  # COCO panoptic: id = R + 256 * G + 256^2 * B
_NUM_CHANNELS = 3
_REQUIRED_ANNOTATION_KEYS = ("image_id", "file_name", "segments_info")
_REQUIRED_CATEGORY_KEYS = ("id", "name", "isthing")
_REQUIRED_SEGMENT_KEYS = ("id", "category_id", "bbox")
_ID_MAP_KEYS = ("thing_dataset_id_to_contiguous_id", "stuff_dataset_id_to_contiguous_id")


def rgb2id(color: np.ndarray) -> np.ndarray:
    """Segment ids of a COCO panoptic PNG: ``R + 256 G + 256^2 B``.

    Args:
        color: uint8 array [..., 3] (RGB).

    Returns:
        int64 array [...].
    """
    color = np.asarray(color)
    if color.shape[-1:] != (_NUM_CHANNELS,):
        raise ValueError(f"rgb2id expects an array [..., 3], got shape {color.shape}")
    color = color.astype(np.int64)
    return color[..., 0] + _CHANNEL_BASE * color[..., 1] + _CHANNEL_BASE**2 * color[..., 2]


def id2rgb(ids: np.ndarray | int) -> np.ndarray:
    """Inverse of :func:`rgb2id`: ids [...] (0 <= id < 256^3) -> uint8 RGB [..., 3]."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= _CHANNEL_BASE**_NUM_CHANNELS):
        raise ValueError(
            f"id2rgb: segment ids must be in [0, 256^3 = {_CHANNEL_BASE**_NUM_CHANNELS}), "
            f"got values in [{ids.min()}, {ids.max()}]"
        )
    channels = [(ids // _CHANNEL_BASE**c) % _CHANNEL_BASE for c in range(_NUM_CHANNELS)]
    return np.stack(channels, axis=-1).astype(np.uint8)


def read_panoptic_ids(file_name: str) -> np.ndarray:
    """Read a panoptic PNG into its segment ids, int64 [H, W] (a ``BadImageError`` naming the file)."""
    try:
        with Image.open(file_name) as img:
            color = np.asarray(img.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise BadImageError(f"Cannot read panoptic PNG '{file_name}': {e}") from e
    return rgb2id(color)


def panoptic_metadata(categories: list[dict[str, Any]]) -> dict[str, Any]:
    """Standard panoptic metadata of COCO panoptic ``categories`` (one contiguous class space).

    Args:
        categories: ``[{"id", "name", "isthing", ("color")}]`` in any order.

    Returns:
        ``thing_classes`` (thing names), ``stuff_classes`` (ALL names, contiguous order),
        ``thing_dataset_id_to_contiguous_id`` (thing ids), ``stuff_dataset_id_to_contiguous_id``
        (stuff ids), both into the one space, and ``thing_colors``/``stuff_colors`` when every
        category has a ``color``.
    """
    cats = sorted(categories, key=lambda c: c["id"])
    things = [(i, c) for i, c in enumerate(cats) if c["isthing"]]
    meta: dict[str, Any] = {
        "thing_classes": [c["name"] for _, c in things],
        "stuff_classes": [c["name"] for c in cats],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in things},
        "stuff_dataset_id_to_contiguous_id": {
            c["id"]: i for i, c in enumerate(cats) if not c["isthing"]
        },
    }
    if cats and all("color" in c for c in cats):
        meta["thing_colors"] = [list(c["color"]) for _, c in things]
        meta["stuff_colors"] = [list(c["color"]) for c in cats]
    return meta


def _validate(data: Any, json_file: str) -> None:
    """Raise one clear error when ``data`` is not a COCO panoptic file."""
    fail = coco_json.validation_error(json_file, "COCO panoptic")
    hint = " (a panoptic category needs 'isthing')"
    coco_json.check_images_and_categories(data, fail, _REQUIRED_CATEGORY_KEYS, hint)
    is_int_id, is_number = coco_json.is_int_id, coco_json.is_finite_number
    for cat in data["categories"]:
        color = cat.get("color", [0, 0, 0])
        if not (isinstance(color, list) and len(color) == 3 and all(map(is_int_id, color))):
            fail(f"category {cat['id']} has color {color!r}, expected [r, g, b]")
    for anno in data["annotations"]:
        missing = [k for k in _REQUIRED_ANNOTATION_KEYS if k not in anno]
        if missing:
            fail(f"annotation of image {anno.get('image_id', '?')} lacks {missing}")
        if not is_int_id(anno["image_id"]) or not isinstance(anno["file_name"], str):
            fail(f"annotation {anno['image_id']!r} needs an int 'image_id' and a 'file_name'")
        if not isinstance(anno["segments_info"], list):
            fail(f"'segments_info' of image {anno['image_id']} is not a list")
        for seg in anno["segments_info"]:
            if not isinstance(seg, dict):
                fail(f"'segments_info' of image {anno['image_id']} holds {seg!r}, not objects")
            missing = [k for k in _REQUIRED_SEGMENT_KEYS if k not in seg]
            if missing:
                fail(f"a segment of image {anno['image_id']} lacks {missing}")
            if not is_int_id(seg["id"]) or not is_int_id(seg["category_id"]):
                fail(f"segment {seg['id']!r} of image {anno['image_id']} needs int ids")
            if not coco_json.is_xywh_box(seg["bbox"]):
                fail(f"segment {seg['id']} of image {anno['image_id']} has bad bbox {seg['bbox']}")
            if not all(is_number(seg.get(k, 0)) for k in ("iscrowd", "area")):
                fail(
                    f"segment {seg['id']} of image {anno['image_id']} has a non-number iscrowd/area"
                )


def _check_dir(path: str, what: str) -> None:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what} folder '{path}' does not exist")


def _id_maps(
    metadata_or_name: str | Mapping | Metadata | None, categories: list[dict[str, Any]]
) -> tuple[dict[str, Any], dict[int, int]]:
    """Derived metadata and the dataset-id -> contiguous-id map of all categories."""
    derived = panoptic_metadata(categories)
    given = metadata_or_name
    if isinstance(given, Metadata):
        given = given.as_dict()
    source = (
        given if isinstance(given, Mapping) and all(k in given for k in _ID_MAP_KEYS) else derived
    )
    id_map = {
        **source["thing_dataset_id_to_contiguous_id"],
        **source["stuff_dataset_id_to_contiguous_id"],
    }
    return derived, id_map


def load_coco_panoptic_json(
    json_file: str | os.PathLike,
    image_root: str | os.PathLike,
    panoptic_root: str | os.PathLike,
    metadata_or_name: str | Mapping | Metadata | None = None,
) -> list[dict[str, Any]]:
    """Load a COCO panoptic JSON into detectron2-style dataset dicts (one annotation per segment).

    Args:
        json_file: the COCO panoptic JSON (``images``, ``annotations`` with ``segments_info``,
            ``categories`` with ``isthing``).
        image_root: folder that ``images[i].file_name`` is relative to.
        panoptic_root: folder of the panoptic PNGs (``annotations[i].file_name``).
        metadata_or_name: a dataset name (its metadata is set from the JSON's categories, see
            :func:`panoptic_metadata`, plus ``panoptic_json``/``panoptic_root``/``image_root``/
            ``evaluator_type``), a metadata mapping whose ``thing_/stuff_dataset_id_to_contiguous_id``
            give the class map, or None (map derived from the JSON, no metadata set).

    Returns:
        One dict per image, sorted by image id: ``file_name``, ``image_id``, ``height``, ``width``,
        ``pan_seg_file_name``, ``segments_info`` (``id``, contiguous ``category_id``, ``iscrowd``,
        ``isthing``, ``bbox``, ``area``) and ``annotations`` (``bbox`` [x, y, w, h], ``bbox_mode``,
        contiguous ``category_id``, ``iscrowd``, ``segment_id``), things AND stuff.

    Raises:
        FileNotFoundError: the JSON or a folder is missing.
        ValueError: not a panoptic file, an unknown category id, an image without annotation entry
            (the message names the file and the offending entry).
    """
    meta_paths = {
        "panoptic_json": coco_json.metadata_path(json_file),
        "panoptic_root": coco_json.metadata_path(panoptic_root),
        "image_root": coco_json.metadata_path(image_root),
    }
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    panoptic_root = os.fspath(panoptic_root)
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"COCO panoptic json file '{json_file}' does not exist")
    _check_dir(image_root, "Image")
    _check_dir(panoptic_root, "Panoptic PNG")
    data = coco_json.read_json(json_file, "COCO panoptic json")
    _validate(data, json_file)

    derived, id_map = _id_maps(metadata_or_name, data["categories"])
    isthing = {c["id"]: bool(c["isthing"]) for c in data["categories"]}
    if isinstance(metadata_or_name, str):
        MetadataCatalog.get(metadata_or_name).set(
            evaluator_type=PANOPTIC_EVALUATOR_TYPE, **meta_paths, **derived
        )

    annos_by_image = {}
    for anno in data["annotations"]:
        annos_by_image[anno["image_id"]] = anno
    image_ids = {img["id"] for img in data["images"]}
    stray = sorted(set(annos_by_image) - image_ids, key=str)
    if stray:
        raise ValueError(f"'{json_file}': annotations refer to unknown image ids {stray[:5]}")

    dataset_dicts = []
    for img in sorted(data["images"], key=lambda im: im["id"]):
        anno = annos_by_image.get(img["id"])
        if anno is None:
            raise ValueError(
                f"'{json_file}': image {img['id']} ('{img['file_name']}') has no entry in "
                "'annotations' (an image without segments needs an entry with empty 'segments_info')"
            )
        segments, annotations = [], []
        for seg in anno["segments_info"]:
            cat = seg["category_id"]
            if cat not in id_map or cat not in isthing:
                raise ValueError(
                    f"'{json_file}': segment {seg['id']} of image {img['id']} has category_id {cat}, "
                    f"which is not in 'categories' (known ids: {sorted(id_map)})"
                )
            bbox = [float(v) for v in seg["bbox"]]
            iscrowd = int(seg.get("iscrowd", 0))
            segments.append(
                {
                    "id": int(seg["id"]),
                    "category_id": id_map[cat],
                    "iscrowd": iscrowd,
                    "isthing": isthing[cat],
                    "bbox": bbox,
                    "area": float(seg.get("area", bbox[2] * bbox[3])),
                }
            )
            annotations.append(
                {
                    "bbox": list(bbox),
                    "bbox_mode": BoxMode.XYWH_ABS.value,
                    "category_id": id_map[cat],
                    "iscrowd": iscrowd,
                    "segment_id": int(seg["id"]),
                }
            )
        pan_file = os.path.abspath(os.path.join(panoptic_root, anno["file_name"]))
        dataset_dicts.append(
            {
                **coco_json.image_record(img, image_root),
                "pan_seg_file_name": pan_file,
                "segments_info": segments,
                "annotations": annotations,
            }
        )
    logger.info("Loaded %d images in COCO panoptic format from %s", len(dataset_dicts), json_file)
    return dataset_dicts


def register_coco_panoptic(
    name: str,
    metadata: dict[str, Any],
    image_root: str | os.PathLike,
    panoptic_root: str | os.PathLike,
    panoptic_json: str | os.PathLike,
) -> None:
    """Register a COCO panoptic dataset under ``name`` (loaded lazily, on ``DatasetCatalog.get``).

    Args:
        name: dataset name, e.g. ``"my_panoptic_train"``.
        metadata: extra metadata (may be empty); classes and id maps come from the JSON on load.
        image_root: folder of the images.
        panoptic_root: folder of the panoptic PNGs.
        panoptic_json: the COCO panoptic JSON.
    """
    paths = {
        "panoptic_json": coco_json.metadata_path(panoptic_json),
        "panoptic_root": coco_json.metadata_path(panoptic_root),
        "image_root": coco_json.metadata_path(image_root),
    }
    coco_json.register_lazy(
        name,
        "register_coco_panoptic",
        lambda dataset: load_coco_panoptic_json(
            paths["panoptic_json"], paths["image_root"], paths["panoptic_root"], dataset
        ),
        {"evaluator_type": PANOPTIC_EVALUATOR_TYPE, **paths, **metadata},
    )


class PanopticDatasetMapper(DetrDatasetMapper):
    """:class:`DetrDatasetMapper` whose masks come from the panoptic PNG.

    The mask of annotation i is ``rgb2id(png) == annotation["segment_id"]``; boxes and masks then
    go through the augmentation together, exactly as for instance segmentation. Training output:
    ``instances`` with ``gt_boxes``, ``gt_classes`` (contiguous over things and stuff) and
    ``gt_masks`` (crowd segments dropped). Test output: no ``instances``, but ``pan_seg_file_name``
    and ``segments_info`` are carried through when present.

    Args: as :class:`DetrDatasetMapper`; ``mask_on`` must be True.
    """

    def __init__(self, *, mask_on: bool = True, **kwargs: Any):
        if not mask_on:
            raise ValueError(
                "PanopticDatasetMapper needs mask_on=True (every panoptic segment is a mask), "
                f"got mask_on={mask_on}"
            )
        super().__init__(mask_on=mask_on, **kwargs)

    def __repr__(self) -> str:
        return "Panoptic" + super().__repr__()

    def _with_png_masks(self, dataset_dict: dict[str, Any]) -> dict[str, Any]:
        """Copy of ``dataset_dict`` whose non-crowd annotations carry their PNG mask (bool [H, W])."""
        file_name = dataset_dict["file_name"]
        pan_file = dataset_dict.get("pan_seg_file_name")
        if pan_file is None:
            raise KeyError(f"Dataset dict of '{file_name}' has no 'pan_seg_file_name'")
        if not os.path.isfile(pan_file):
            raise BadImageError(f"Panoptic PNG '{pan_file}' of image '{file_name}' does not exist")
        ids = read_panoptic_ids(pan_file)
        size = (dataset_dict.get("height"), dataset_dict.get("width"))
        if None in size:
            with Image.open(file_name) as img:
                size = (img.height, img.width)
        if tuple(ids.shape) != tuple(size):
            raise BadImageError(
                f"Panoptic PNG '{pan_file}' has size (h, w)={tuple(ids.shape)} but image "
                f"'{file_name}' has size {tuple(size)}"
            )
        out = dict(dataset_dict)
        annotations = []
        for i, anno in enumerate(dataset_dict.get("annotations", [])):
            if int(anno.get("iscrowd", 0)):
                continue
            if "segment_id" not in anno:
                raise KeyError(f"Annotation {i} of '{file_name}' has no 'segment_id'")
            annotations.append({**anno, "segmentation": ids == int(anno["segment_id"])})
        out["annotations"] = annotations
        return out

    def __call__(self, dataset_dict: dict[str, Any]) -> dict[str, Any] | None:
        """Map one panoptic dataset dict (not modified) to a model input dict, or None if skipped."""
        if self.is_train:
            out = super().__call__(self._with_png_masks(dataset_dict))
        else:
            out = super().__call__(dataset_dict)
            if out is not None:
                for key in ("pan_seg_file_name", "segments_info"):
                    if key in dataset_dict:
                        out[key] = copy.deepcopy(dataset_dict[key])
        return out
