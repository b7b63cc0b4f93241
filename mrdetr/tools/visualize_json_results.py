"""Side-by-side pictures of predictions (left) and ground truth (right) for a registered dataset.

    python tools/visualize_json_results.py --input coco_instances_results.json --output DIR \
        --dataset coco_2017_val [--conf-threshold 0.5] [--json-file F --image-root D]
    python tools/visualize_json_results.py --input OUT/predictions.json --output DIR \
        --dataset coco_2017_val_panoptic [--pred-root OUT/panoptic_predictions]

``--input`` is either

- a COCO-format detection results file as written by the evaluator (a list of ``image_id``,
  ``category_id``, ``bbox`` [x, y, w, h], ``score``, optional RLE ``segmentation``). Category ids are
  mapped back through the dataset's ``thing_dataset_id_to_contiguous_id`` (``id - 1`` for LVIS);
- or a COCO panoptic predictions file as written by the panoptic evaluator with an output folder
  (an object whose ``annotations`` carry ``file_name`` and ``segments_info``), its PNGs in
  ``--pred-root`` (default: ``panoptic_predictions/`` next to ``--input``). Segments are drawn as
  translucent regions on the image, the ground truth from the dataset's own panoptic PNGs; dataset
  category ids are mapped through ``thing_/stuff_dataset_id_to_contiguous_id``, names come from
  ``stuff_classes``.

Every image of the dataset (also those without predictions) gets ``DIR/<image basename>``; existing
pictures are never overwritten. ``--conf-threshold`` drops detections (default 0.5) or panoptic
segments that carry a ``score`` (default 0: the panoptic merge already filtered them) with a score
at or below it. ``--json-file``/``--image-root`` register an unregistered COCO-format (detection)
dataset under ``--dataset`` first.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..utils.progress import track
from ._visualize_panoptic import (
    PREDICTIONS_DIR,
    is_panoptic_predictions,
    output_targets,
    visualize_panoptic,
)

__all__ = ["build_parser", "category_mapper", "group_predictions", "main", "visualize"]

logger = logging.getLogger(__name__)

_LVIS_ID_OFFSET = 1  # LVIS category ids are 1..K and contiguous
_DETECTION_THRESHOLD = 0.5  # default --conf-threshold for detections
_PANOPTIC_THRESHOLD = 0.0  # default --conf-threshold for panoptic segments (all kept)
_REQUIRED_DETECTION_KEYS = ("image_id", "category_id", "bbox", "score")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="--input may be a detection results list (coco_instances_results.json) or a COCO "
        "panoptic predictions.json (its PNGs in --pred-root).",
    )
    p.add_argument(
        "--input",
        required=True,
        help="COCO-format detection results JSON, or a COCO panoptic predictions.json",
    )
    p.add_argument("--output", required=True, help="output directory (created)")
    p.add_argument("--dataset", default="coco_2017_val", help="registered dataset name")
    p.add_argument(
        "--conf-threshold",
        type=float,
        default=None,
        help=f"draw only scores above this (default {_DETECTION_THRESHOLD} for detections, "
        f"{_PANOPTIC_THRESHOLD} for panoptic segments; segments without a score are always drawn)",
    )
    p.add_argument(
        "--pred-root",
        help="panoptic input only: folder of the prediction PNGs "
        f"(default: <folder of --input>/{PREDICTIONS_DIR})",
    )
    p.add_argument("--json-file", help="COCO json to register under --dataset when it is unknown")
    p.add_argument("--image-root", help="image folder of --json-file")
    return p


def category_mapper(dataset_name: str, metadata: Any) -> Mapping[int, int] | None:
    """Dataset category id -> contiguous id map; None means ``id - 1`` (LVIS).

    Raises:
        ValueError: the metadata has no id map and the dataset is not LVIS.
    """
    id_map = metadata.get("thing_dataset_id_to_contiguous_id")
    if id_map is not None:
        return {int(k): int(v) for k, v in id_map.items()}
    if "lvis" in dataset_name:
        return None
    raise ValueError(
        f"dataset '{dataset_name}' has no 'thing_dataset_id_to_contiguous_id' metadata to map category ids"
    )


def _load_json(path: str) -> Any:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"results file not found: {path}")
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None


def _check_detections(results: Any, path: str) -> list[dict[str, Any]]:
    required = _REQUIRED_DETECTION_KEYS
    if not isinstance(results, list) or any(
        not isinstance(r, dict) or any(k not in r for k in required) for r in results
    ):
        raise ValueError(
            f"{path}: expected a list of detections with keys {required} or a COCO panoptic "
            "predictions file (an object with 'annotations' that carry 'file_name' and "
            "'segments_info')"
        )
    return results


def group_predictions(
    results: list[dict[str, Any]],
    image_ids: set,
    id_map: Mapping[int, int] | None,
    threshold: float,
) -> dict[Any, list[dict[str, Any]]]:
    """Detections above ``threshold`` per image id, with contiguous ``category_id``.

    Raises:
        KeyError: a result names an image id or a category id the dataset does not have.
    """
    unknown = sorted({r["image_id"] for r in results} - image_ids, key=str)
    if unknown:
        raise KeyError(
            f"{len(unknown)} image id(s) of the results are not in the dataset, e.g. {unknown[:5]}"
        )
    grouped: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        if r["score"] <= threshold:
            continue
        cat = int(r["category_id"])
        if id_map is None:
            contiguous = cat - _LVIS_ID_OFFSET
        elif cat in id_map:
            contiguous = id_map[cat]
        else:
            raise KeyError(f"category id {cat} of image {r['image_id']} is not in the dataset")
        grouped[r["image_id"]].append({**r, "category_id": contiguous})
    return grouped


def _prediction_arrays(dets: list[dict[str, Any]], h: int, w: int):
    from ..data.detection_utils import rasterize_segmentation

    boxes = np.array([d["bbox"] for d in dets], dtype=np.float32).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    classes = np.array([d["category_id"] for d in dets], dtype=np.int64)
    scores = np.array([d["score"] for d in dets], dtype=np.float32)
    masks = None
    if dets and all("segmentation" in d for d in dets):
        masks = np.stack([rasterize_segmentation(d["segmentation"], h, w) for d in dets])
    return boxes, classes, scores, masks


def _ground_truth_arrays(record: dict[str, Any], h: int, w: int):
    from ..data.detection_utils import annotation_boxes_xyxy, rasterize_segmentation

    annos = [a for a in record.get("annotations", []) if not a.get("iscrowd", 0)]
    boxes = annotation_boxes_xyxy(annos, record["file_name"]).numpy()
    classes = np.array([a["category_id"] for a in annos], dtype=np.int64)
    masks = None
    if annos and all("segmentation" in a for a in annos):
        masks = np.stack([rasterize_segmentation(a["segmentation"], h, w) for a in annos])
    return boxes, classes, masks


def visualize(
    results_file: str,
    output_dir: str,
    dataset_name: str,
    threshold: float | None = None,
    pred_root: str | None = None,
) -> list[str]:
    """Write one side-by-side picture per dataset image; returns the paths written.

    ``results_file`` is a detection results list or a COCO panoptic predictions file (see the
    module docstring); ``threshold`` None means the default of that kind; ``pred_root`` is used
    by panoptic input only.
    """
    from ..data import DatasetCatalog, MetadataCatalog
    from ..data.detection_utils import read_image
    from ..utils.visualizer import draw_instances, save_image, side_by_side

    data = _load_json(results_file)
    if is_panoptic_predictions(data):
        threshold = _PANOPTIC_THRESHOLD if threshold is None else threshold
        return visualize_panoptic(
            data, results_file, output_dir, dataset_name, threshold, pred_root=pred_root
        )
    if pred_root is not None:
        raise ValueError(f"--pred-root is for panoptic predictions, but {results_file} is not one")
    results = _check_detections(data, results_file)
    threshold = _DETECTION_THRESHOLD if threshold is None else threshold
    records = DatasetCatalog.get(dataset_name)
    metadata = MetadataCatalog.get(dataset_name)
    names = metadata.get("thing_classes")
    grouped = group_predictions(
        results,
        {r["image_id"] for r in records},
        category_mapper(dataset_name, metadata),
        threshold,
    )
    targets = output_targets(records, output_dir)
    for record, target in zip(track(records, "images"), targets):
        image = read_image(record["file_name"], img_format="RGB").permute(1, 2, 0).numpy()
        h, w = image.shape[:2]
        boxes, classes, scores, masks = _prediction_arrays(
            grouped.get(record["image_id"], []), h, w
        )
        pred = draw_instances(image, boxes, classes, scores, masks, names)
        gt_boxes, gt_classes, gt_masks = _ground_truth_arrays(record, h, w)
        gt = draw_instances(image, gt_boxes, gt_classes, None, gt_masks, names)
        save_image(target, side_by_side(pred, gt))
    logger.info("wrote %d images to %s", len(targets), output_dir)
    return targets


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..data import DatasetCatalog, register_coco_instances

    if args.json_file or args.image_root:
        if not (args.json_file and args.image_root):
            raise ValueError("--json-file and --image-root must be given together")
        if args.dataset in DatasetCatalog:
            raise ValueError(f"--dataset '{args.dataset}' is already registered; drop --json-file")
        register_coco_instances(args.dataset, {}, args.json_file, args.image_root)
    visualize(args.input, args.output, args.dataset, args.conf_threshold, args.pred_root)
    return 0


if __name__ == "__main__":
    from ._cli import run_cli

    raise SystemExit(run_cli(main))
