"""Panoptic half of ``visualize_json_results``: COCO panoptic predictions next to the ground truth.

The predictions are what :class:`~mrdetr.evaluation.COCOPanopticEvaluator` writes with an
``output_dir``: ``predictions.json`` (``annotations``: ``[{"image_id", "file_name" (PNG),
"segments_info": [{"id", "category_id" (dataset id), ("score")}]}]``) and the PNGs in
``panoptic_predictions/`` next to it. Every image of the dataset gets ``DIR/<image basename>``:
the prediction drawn on the image (left; the plain image when there is none) and the dataset's own
panoptic PNG (right).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..utils.progress import track

__all__ = [
    "PREDICTIONS_DIR",
    "is_panoptic_predictions",
    "panoptic_id_map",
    "visualize_panoptic",
]

logger = logging.getLogger(__name__)

PREDICTIONS_DIR = "panoptic_predictions"  # folder of the PNGs, next to predictions.json
_ID_MAP_KEYS = ("thing_dataset_id_to_contiguous_id", "stuff_dataset_id_to_contiguous_id")


def is_panoptic_predictions(data: Any) -> bool:
    """Whether ``data`` (a parsed JSON) is a COCO panoptic predictions file.

    That is an object with a list ``annotations`` whose entries all have ``segments_info`` and
    ``file_name`` (an empty list counts).
    """
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        return False
    return all(
        isinstance(a, dict) and "segments_info" in a and "file_name" in a
        for a in data["annotations"]
    )


def panoptic_id_map(dataset_name: str, metadata: Any) -> tuple[dict[int, int], set[int]]:
    """Dataset category id -> contiguous id over things and stuff, and the thing dataset ids.

    Raises:
        ValueError: the metadata lacks one of the two id maps.
    """
    maps = {}
    for key in _ID_MAP_KEYS:
        value = metadata.get(key)
        if value is None:
            raise ValueError(
                f"dataset '{dataset_name}' has no '{key}' metadata (is it a panoptic dataset?)"
            )
        maps[key] = {int(k): int(v) for k, v in value.items()}
    things = maps[_ID_MAP_KEYS[0]]
    return {**maps[_ID_MAP_KEYS[1]], **things}, set(things)


def output_targets(records: list[dict[str, Any]], output_dir: str) -> list[str]:
    """``output_dir/<image basename>`` per record; creates ``output_dir``, refuses existing files."""
    targets = [os.path.join(output_dir, os.path.basename(r["file_name"])) for r in records]
    existing = [t for t in targets if os.path.exists(t)]
    if existing:
        raise FileExistsError(f"output file already exists: {existing[0]} (refusing to overwrite)")
    os.makedirs(output_dir, exist_ok=True)
    return targets


def _check_annotations(
    data: dict[str, Any], input_file: str, image_ids: set, id_map: Mapping[int, int]
) -> dict[Any, dict[str, Any]]:
    """The prediction entry per image id, after checking image and category ids."""
    by_image: dict[Any, dict[str, Any]] = {}
    for anno in data["annotations"]:
        if "image_id" not in anno:
            raise ValueError(
                f"{input_file}: an annotation (file '{anno['file_name']}') has no 'image_id'"
            )
        by_image[anno["image_id"]] = anno
    unknown = sorted(set(by_image) - image_ids, key=str)
    if unknown:
        raise KeyError(
            f"{input_file}: {len(unknown)} image id(s) are not in the dataset, e.g. {unknown[:5]}"
        )
    for image_id, anno in by_image.items():
        for seg in anno["segments_info"]:
            if not isinstance(seg, dict) or "id" not in seg or "category_id" not in seg:
                raise ValueError(
                    f"{input_file}: a segment of image {image_id} lacks 'id' or 'category_id': {seg}"
                )
            if int(seg["category_id"]) not in id_map:
                raise KeyError(
                    f"{input_file}: category id {seg['category_id']} of image {image_id} is not "
                    f"in the dataset (known ids: {sorted(id_map)})"
                )
    return by_image


def _prediction_segments(
    anno: Mapping[str, Any], id_map: Mapping[int, int], thing_ids: set[int], threshold: float
) -> list[dict[str, Any]]:
    """Segments with contiguous ids; those with a score <= ``threshold`` are dropped."""
    out = []
    for seg in anno["segments_info"]:
        if "score" in seg and float(seg["score"]) <= threshold:
            continue
        cat = int(seg["category_id"])
        out.append({**seg, "category_id": id_map[cat], "isthing": cat in thing_ids})
    return out


def _read_ids(file_name: str, shape: tuple[int, int], image_id: Any, what: str) -> np.ndarray:
    from ..data.panoptic import read_panoptic_ids

    ids = read_panoptic_ids(file_name)
    if ids.shape != shape:
        raise ValueError(
            f"{what} PNG '{file_name}' of image {image_id} has size (h, w)={ids.shape}, "
            f"the image has {shape}"
        )
    return ids


def visualize_panoptic(
    data: dict[str, Any],
    input_file: str,
    output_dir: str,
    dataset_name: str,
    threshold: float,
    pred_root: str | None = None,
) -> list[str]:
    """Write one side-by-side picture per dataset image (prediction left, ground truth right).

    Args:
        data: the parsed predictions file (see :func:`is_panoptic_predictions`).
        input_file: its path (for messages and the default ``pred_root``).
        output_dir: folder of the pictures (created; existing pictures are never overwritten).
        dataset_name: a registered COCO panoptic dataset.
        threshold: segments with a ``score`` <= this are not drawn (segments without one are).
        pred_root: folder of the prediction PNGs (default ``<folder of input_file>/
            panoptic_predictions``).

    Returns:
        The paths written, one per dataset image.

    Raises:
        FileNotFoundError: a prediction PNG is missing (names the file and the image id).
        FileExistsError: an output picture exists.
        KeyError: an image id or a category id that the dataset does not have.
        ValueError: the dataset has no panoptic metadata, or a PNG's size is not the image's.
    """
    from ..data import DatasetCatalog, MetadataCatalog
    from ..data.detection_utils import read_image
    from ..utils.visualizer import draw_panoptic, save_image, side_by_side

    if pred_root is None:
        pred_root = os.path.join(os.path.dirname(os.path.abspath(input_file)), PREDICTIONS_DIR)
    records = DatasetCatalog.get(dataset_name)
    metadata = MetadataCatalog.get(dataset_name)
    id_map, thing_ids = panoptic_id_map(dataset_name, metadata)
    names = metadata.get("stuff_classes")
    by_image = _check_annotations(data, input_file, {r["image_id"] for r in records}, id_map)
    for image_id, anno in by_image.items():
        png = os.path.join(pred_root, anno["file_name"])
        if not os.path.isfile(png):
            raise FileNotFoundError(f"prediction PNG '{png}' of image {image_id} does not exist")
    for r in records:
        if "pan_seg_file_name" not in r:
            raise KeyError(
                f"dataset '{dataset_name}': image {r['image_id']} has no 'pan_seg_file_name'"
            )
    targets = output_targets(records, output_dir)
    for record, target in zip(track(records, "images"), targets):
        image = read_image(record["file_name"], img_format="RGB").permute(1, 2, 0).numpy()
        shape = image.shape[:2]
        image_id = record["image_id"]
        pred = image
        anno = by_image.get(image_id)
        if anno is not None:
            png = os.path.join(pred_root, anno["file_name"])
            ids = _read_ids(png, shape, image_id, "prediction")
            segments = _prediction_segments(anno, id_map, thing_ids, threshold)
            pred = draw_panoptic(image, ids, segments, names)
        gt_ids = _read_ids(record["pan_seg_file_name"], shape, image_id, "ground-truth")
        gt = draw_panoptic(image, gt_ids, record.get("segments_info", []), names)
        save_image(target, side_by_side(pred, gt))
    logger.info("wrote %d images to %s", len(targets), output_dir)
    return targets
