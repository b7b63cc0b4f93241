"""Side-by-side pictures of predictions (left) and ground truth (right) for a registered dataset.

    python tools/visualize_json_results.py --input coco_instances_results.json --output DIR \
        --dataset coco_2017_val [--conf-threshold 0.5] [--json-file F --image-root D]

``--input`` is a COCO-format results file as written by the evaluator (``image_id``, ``category_id``,
``bbox`` [x, y, w, h], ``score``, optional RLE ``segmentation``). Every image of the dataset (also
those without detections) gets ``DIR/<image basename>``. Category ids are mapped back through the
dataset's ``thing_dataset_id_to_contiguous_id`` (``id - 1`` for LVIS). ``--json-file``/``--image-root``
register an unregistered COCO-format dataset under ``--dataset`` first.
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
from tqdm import tqdm

__all__ = ["build_parser", "category_mapper", "group_predictions", "main", "visualize"]

logger = logging.getLogger(__name__)

_LVIS_ID_OFFSET = 1  # LVIS category ids are 1..K and contiguous


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--input", required=True, help="COCO-format results JSON")
    p.add_argument("--output", required=True, help="output directory (created)")
    p.add_argument("--dataset", default="coco_2017_val", help="registered dataset name")
    p.add_argument("--conf-threshold", type=float, default=0.5, help="minimum score drawn")
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


def _read_results(path: str) -> list[dict[str, Any]]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"results file not found: {path}")
    try:
        with open(path) as f:
            results = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    required = ("image_id", "category_id", "bbox", "score")
    if not isinstance(results, list) or any(
        not isinstance(r, dict) or any(k not in r for k in required) for r in results
    ):
        raise ValueError(f"{path}: expected a list of detections with keys {required}")
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
    threshold: float,
) -> list[str]:
    """Write one side-by-side JPEG per dataset image; returns the paths written."""
    import cv2

    from ..data import DatasetCatalog, MetadataCatalog
    from ..data.detection_utils import read_image
    from ..utils.visualizer import draw_instances, side_by_side

    results = _read_results(results_file)
    records = DatasetCatalog.get(dataset_name)
    metadata = MetadataCatalog.get(dataset_name)
    names = metadata.get("thing_classes")
    grouped = group_predictions(
        results,
        {r["image_id"] for r in records},
        category_mapper(dataset_name, metadata),
        threshold,
    )
    targets = [os.path.join(output_dir, os.path.basename(r["file_name"])) for r in records]
    existing = [t for t in targets if os.path.exists(t)]
    if existing:
        raise FileExistsError(f"output file already exists: {existing[0]} (refusing to overwrite)")
    os.makedirs(output_dir, exist_ok=True)
    for record, target in zip(tqdm(records, desc="images"), targets):
        image = read_image(record["file_name"], img_format="RGB").permute(1, 2, 0).numpy()
        h, w = image.shape[:2]
        boxes, classes, scores, masks = _prediction_arrays(
            grouped.get(record["image_id"], []), h, w
        )
        pred = draw_instances(image, boxes, classes, scores, masks, names)
        gt_boxes, gt_classes, gt_masks = _ground_truth_arrays(record, h, w)
        gt = draw_instances(image, gt_boxes, gt_classes, None, gt_masks, names)
        ext = os.path.splitext(target)[1] or ".jpg"
        ok, buf = cv2.imencode(ext, np.ascontiguousarray(side_by_side(pred, gt)[:, :, ::-1]))
        if not ok:
            raise ValueError(f"cannot encode {target}")
        tmp = target + ".tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(buf.tobytes())
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
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
    visualize(args.input, args.output, args.dataset, args.conf_threshold)
    return 0


if __name__ == "__main__":
    from ._cli import run_cli

    raise SystemExit(run_cli(main))
