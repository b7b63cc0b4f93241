"""Panoptic quality statistics (PQ / SQ / RQ) with COCO ``panopticapi`` ``pq_compute`` semantics.

Written from the definition (Kirillov et al., "Panoptic Segmentation", CVPR 2019): a (gt, pred)
pair of the same category matches when IoU > 0.5, with
``IoU = inter / (pred_area + gt_area - inter - pred pixels on GT void)`` (as in panopticapi, pixels
on a GT crowd region stay in the union); crowd GT segments are neither TP nor FN; an unmatched
prediction is a FP unless more than half of its pixels lie on GT void or on crowd regions of its
own category. Areas are pixel counts of the maps. Predicted pixels of ids missing from
``segments_info`` are an error; listed segments without pixels are ignored.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "OFFSET",
    "VOID_ID",
    "PQCategoryStat",
    "PQStat",
    "id_to_rgb",
    "load_panoptic_categories",
    "pq_compute_from_files",
    "pq_compute_single_image",
    "read_panoptic_png",
    "rgb_to_id",
]

VOID_ID = 0
_RGB_BASE = 256
# Segment ids are stored in 3 PNG channels; pairs (gt, pred) are encoded as gt * OFFSET + pred.
OFFSET = _RGB_BASE**3


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """COCO panoptic colour [H, W, 3] uint8 -> segment ids [H, W] int64 (R + 256 G + 256² B)."""
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + _RGB_BASE * rgb[..., 1] + _RGB_BASE * _RGB_BASE * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """Segment ids [H, W] (0 <= id < 256³) -> COCO panoptic colour [H, W, 3] uint8."""
    ids = ids.astype(np.int64)
    return np.stack([(ids // _RGB_BASE**k) % _RGB_BASE for k in range(3)], axis=-1).astype(np.uint8)


def read_panoptic_png(path: str) -> np.ndarray:
    """Read a COCO panoptic PNG into segment ids [H, W] int64 (0 = void)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"panoptic PNG '{path}' does not exist")
    with Image.open(path) as img:
        return rgb_to_id(np.asarray(img.convert("RGB")))


@dataclass
class PQCategoryStat:
    """Counts of one category: true/false positives, false negatives, sum of matched IoUs."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    iou_sum: float = 0.0

    def __iadd__(self, other: PQCategoryStat) -> PQCategoryStat:
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.iou_sum += other.iou_sum
        return self


class PQStat:
    """Per-category :class:`PQCategoryStat`, keyed by dataset category id; add with ``+=``."""

    def __init__(self) -> None:
        self.per_category: dict[int, PQCategoryStat] = {}

    def __getitem__(self, category_id: int) -> PQCategoryStat:
        return self.per_category.setdefault(int(category_id), PQCategoryStat())

    def __iadd__(self, other: PQStat) -> PQStat:
        for cat, stat in other.per_category.items():
            mine = self[cat]
            mine += stat
        return self

    def pq_average(
        self, categories: Mapping[int, Mapping[str, Any]], isthing: bool | None = None
    ) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
        """Average PQ/SQ/RQ (fractions) over the categories that appear (tp + fp + fn > 0).

        Args:
            categories: dataset category id -> ``{"isthing": bool|int, ...}``.
            isthing: ``True`` = things only, ``False`` = stuff only, ``None`` = all.

        Returns:
            ``{"pq", "sq", "rq", "n"}`` (NaN when no category appears) and per-category
            ``{cat: {"pq", "sq", "rq"}}`` of the categories that appear.
        """
        per_class: dict[int, dict[str, float]] = {}
        for cat, info in categories.items():
            if isthing is not None and bool(info["isthing"]) != isthing:
                continue
            s = self.per_category.get(int(cat))
            if s is None or s.tp + s.fp + s.fn == 0:
                continue
            sq = s.iou_sum / s.tp if s.tp > 0 else 0.0
            rq = s.tp / (s.tp + 0.5 * s.fp + 0.5 * s.fn)
            per_class[int(cat)] = {"pq": sq * rq, "sq": sq, "rq": rq}
        n = len(per_class)
        avg = {
            k: sum(c[k] for c in per_class.values()) / n if n else math.nan
            for k in ("pq", "sq", "rq")
        }
        avg["n"] = n
        return avg, per_class


def _areas(ids: np.ndarray) -> dict[int, int]:
    labels, counts = np.unique(ids, return_counts=True)
    return dict(zip(labels.tolist(), counts.tolist()))


def _segment_dict(segments: Sequence[Mapping[str, Any]], what: str) -> dict[int, Mapping[str, Any]]:
    out: dict[int, Mapping[str, Any]] = {}
    for seg in segments:
        sid = int(seg["id"])
        if sid in out or sid == VOID_ID or not 0 < sid < OFFSET:
            raise ValueError(
                f"{what} segment id {sid} is duplicated or outside [1, {OFFSET - 1}] (0 = void)"
            )
        out[sid] = seg
    return out


def pq_compute_single_image(
    gt_ids: np.ndarray,
    gt_segments: Sequence[Mapping[str, Any]],
    pred_ids: np.ndarray,
    pred_segments: Sequence[Mapping[str, Any]],
    *,
    iou_threshold: float = 0.5,
    ignore_fraction: float = 0.5,
) -> PQStat:
    """Per-category TP/FP/FN/IoU-sum of one image (COCO ``pq_compute`` semantics).

    Predicted segments listed in ``pred_segments`` but absent from ``pred_ids`` are ignored.

    Args:
        gt_ids: GT segment ids [H, W] (0 = void).
        gt_segments: ``{"id", "category_id", "iscrowd"}`` per GT segment.
        pred_ids: predicted segment ids [H, W] (0 = unassigned).
        pred_segments: ``{"id", "category_id"}`` per predicted segment (same category ids as GT).
        iou_threshold: a pair matches when IoU > this (>= 0.5 keeps matches unique).
        ignore_fraction: an unmatched prediction is not a FP when more than this fraction of its
            pixels lies on GT void or on a crowd region of its category.

    Returns:
        The image's :class:`PQStat`.
    """
    if iou_threshold < 0.5:
        raise ValueError(f"iou_threshold must be >= 0.5 for unique matching, got {iou_threshold}")
    gt = np.asarray(gt_ids, dtype=np.int64)
    pred = np.asarray(pred_ids, dtype=np.int64)
    if gt.shape != pred.shape or gt.ndim != 2:
        raise ValueError(f"GT map {gt.shape} and prediction map {pred.shape} must be equal [H, W]")
    gt_segms = _segment_dict(gt_segments, "GT")
    pred_segms = _segment_dict(pred_segments, "predicted")
    gt_area, pred_area = _areas(gt), _areas(pred)
    for name, area, segms in (("GT", gt_area, gt_segms), ("predicted", pred_area, pred_segms)):
        unknown = sorted(set(area) - set(segms) - {VOID_ID})
        if unknown:
            raise ValueError(
                f"{name} map has pixels of segment ids {unknown} missing from its segments_info"
            )
    inter = _areas(gt * OFFSET + pred)
    pair_area = {(k // OFFSET, k % OFFSET): v for k, v in inter.items()}

    stat = PQStat()
    gt_matched: set[int] = set()
    pred_matched: set[int] = set()
    for (g, p), intersection in pair_area.items():
        if g == VOID_ID or p == VOID_ID or gt_segms[g].get("iscrowd", 0):
            continue
        category = gt_segms[g]["category_id"]
        if category != pred_segms[p]["category_id"]:
            continue
        union = pred_area[p] + gt_area[g] - intersection - pair_area.get((VOID_ID, p), 0)
        iou = intersection / union
        if iou > iou_threshold:
            stat[category].tp += 1
            stat[category].iou_sum += iou
            gt_matched.add(g)
            pred_matched.add(p)

    crowd: dict[int, list[int]] = {}
    for g, seg in gt_segms.items():
        if seg.get("iscrowd", 0):
            crowd.setdefault(int(seg["category_id"]), []).append(g)
        elif g not in gt_matched:
            stat[seg["category_id"]].fn += 1
    for p, seg in pred_segms.items():
        if p in pred_matched or pred_area.get(p, 0) == 0:
            continue
        ignored = pair_area.get((VOID_ID, p), 0)
        ignored += sum(pair_area.get((g, p), 0) for g in crowd.get(int(seg["category_id"]), []))
        if ignored / pred_area[p] > ignore_fraction:
            continue
        stat[seg["category_id"]].fp += 1
    return stat


def load_panoptic_categories(data: Mapping[str, Any], path: str) -> dict[int, dict[str, Any]]:
    """Categories (id -> dict) of a loaded COCO panoptic json ``data`` read from ``path``."""
    if "categories" not in data or "annotations" not in data:
        raise KeyError(f"panoptic json '{path}' needs 'annotations' and 'categories'")
    return {int(c["id"]): c for c in data["categories"]}


def pq_compute_from_files(
    gt_json_file: str, gt_folder: str, pred_json_file: str, pred_folder: str, **kwargs: float
) -> tuple[PQStat, dict[int, dict[str, Any]]]:
    """Score COCO-panoptic-format predictions (json + PNGs) against COCO panoptic ground truth.

    Only the images present in the prediction json are scored.

    Args:
        gt_json_file, gt_folder: GT ``panoptic_json`` and its PNG folder.
        pred_json_file, pred_folder: predictions in the same format.
        **kwargs: ``iou_threshold`` / ``ignore_fraction`` of :func:`pq_compute_single_image`.

    Returns:
        The accumulated :class:`PQStat` and the GT categories (id -> category dict).
    """
    with open(gt_json_file) as f:
        gt_data = json.load(f)
    with open(pred_json_file) as f:
        pred_data = json.load(f)
    categories = load_panoptic_categories(gt_data, gt_json_file)
    gt_by_image = {a["image_id"]: a for a in gt_data["annotations"]}
    stat = PQStat()
    for pred_ann in pred_data["annotations"]:
        gt_ann = gt_by_image.get(pred_ann["image_id"])
        if gt_ann is None:
            raise KeyError(
                f"'{pred_json_file}': image_id {pred_ann['image_id']} not in '{gt_json_file}'"
            )
        stat += pq_compute_single_image(
            read_panoptic_png(os.path.join(gt_folder, gt_ann["file_name"])),
            gt_ann["segments_info"],
            read_panoptic_png(os.path.join(pred_folder, pred_ann["file_name"])),
            pred_ann["segments_info"],
            **kwargs,
        )
    return stat, categories
