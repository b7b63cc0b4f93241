"""COCO evaluation backends (pycocotools, faster-coco-eval) behind one small interface."""

from __future__ import annotations

import contextlib
import copy
import io
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "BACKENDS",
    "CocoEvalResult",
    "evaluate_coco",
    "import_backend",
    "load_coco_api",
    "summarize_coco_eval",
]

BACKENDS = ("pycocotools", "faster_coco_eval")
# Detection limits of the first two AR numbers of the standard summary (capped by the third,
# configurable one).
_SMALL_MAX_DETS = (1, 10)
# Which result key each task evaluates; the other geometry key is dropped from its copy of the
# results so that the area of a detection comes from the evaluated geometry (box or mask).
_DROP_KEY = {"bbox": "segmentation", "segm": "bbox"}


def import_backend(backend: str) -> tuple[type, type]:
    """Return the ``(COCO, COCOeval)`` classes of ``backend``.

    Raises:
        ValueError: unknown backend name.
        ImportError: ``faster_coco_eval`` asked for but not installed.
    """
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval
    if backend == "faster_coco_eval":
        try:
            from faster_coco_eval import COCO as FasterCOCO
            from faster_coco_eval import COCOeval_faster
        except ImportError as e:
            raise ImportError(
                "COCOEvaluator(backend='faster_coco_eval') needs the faster-coco-eval package: "
                "pip install faster-coco-eval"
            ) from e
        return FasterCOCO, COCOeval_faster
    raise ValueError(f"Unknown COCO evaluation backend '{backend}'; expected one of {BACKENDS}")


def load_coco_api(json_file: str, backend: str = "pycocotools") -> Any:
    """Load a COCO-format annotation file with the ``COCO`` class of ``backend`` (quietly)."""
    coco_cls, _ = import_backend(backend)
    with contextlib.redirect_stdout(io.StringIO()):
        return coco_cls(json_file)


@dataclass
class CocoEvalResult:
    """Output of one COCOeval run.

    Attributes:
        stats: the 12 standard numbers (fractions; -1 where undefined), shape [12].
        precision: COCOeval precision, shape [T iou thresholds, R recall points, K classes,
            A area ranges, M max-dets]; -1 where undefined.
        cat_ids: dataset category id of each of the K classes.
        summary: the 12 standard lines, as pycocotools prints them.
    """

    stats: np.ndarray
    precision: np.ndarray
    cat_ids: list[int]
    summary: str


def evaluate_coco(
    coco_gt: Any,
    results: list[dict],
    *,
    iou_type: str,
    backend: str = "pycocotools",
    max_dets_per_image: int = 100,
    img_ids: list[int] | None = None,
) -> CocoEvalResult:
    """Run COCOeval of ``iou_type`` on COCO-format ``results`` (left unmodified).

    Args:
        coco_gt: ground truth loaded by :func:`load_coco_api` with the same backend.
        results: COCO results (``image_id``, ``category_id``, ``score``, ``bbox`` xywh and/or
            ``segmentation`` RLE); must not be empty.
        iou_type: "bbox" or "segm".
        backend: "pycocotools" or "faster_coco_eval".
        max_dets_per_image: detections per image kept by COCOeval (the third ``maxDets``).
        img_ids: evaluate only these images (default: all images of ``coco_gt``).
    """
    if iou_type not in _DROP_KEY:
        raise ValueError(
            f"Unsupported COCO iou_type '{iou_type}'; expected one of {list(_DROP_KEY)}"
        )
    if len(results) == 0:
        raise ValueError("evaluate_coco: results must not be empty")
    if iou_type == "segm" and "segmentation" not in results[0]:
        raise ValueError("evaluate_coco(iou_type='segm'): the results carry no 'segmentation'")
    unknown = sorted({r["image_id"] for r in results} - set(coco_gt.getImgIds()))
    if unknown:
        raise ValueError(
            f"evaluate_coco: predictions for image ids {unknown[:10]} that are not in the "
            "ground-truth annotation file"
        )
    _, eval_cls = import_backend(backend)
    drop = _DROP_KEY[iou_type]
    results = [{k: v for k, v in copy.deepcopy(r).items() if k != drop} for r in results]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(results)
        coco_eval = eval_cls(coco_gt, coco_dt, iou_type)
        # COCOeval sorts maxDets and evaluates at the last one: keep the list sorted.
        small = [min(m, max_dets_per_image) for m in _SMALL_MAX_DETS]
        coco_eval.params.maxDets = [*small, max_dets_per_image]
        if img_ids is not None:
            coco_eval.params.imgIds = list(img_ids)
        coco_eval.evaluate()
        coco_eval.accumulate()
    stats, summary = summarize_coco_eval(coco_eval.eval, coco_eval.params)
    return CocoEvalResult(
        stats=stats,
        precision=np.asarray(coco_eval.eval["precision"]),
        cat_ids=[int(c) for c in coco_eval.params.catIds],
        summary=summary,
    )


def summarize_coco_eval(eval_dict: dict[str, Any], params: Any) -> tuple[np.ndarray, str]:
    """The 12 standard detection numbers of an accumulated COCOeval.

    Same numbers and text as ``COCOeval.summarize`` (which assumes ``maxDets[2] == 100`` for the
    first AP), for any ``params.maxDets``.

    Args:
        eval_dict: ``COCOeval.eval`` with ``precision`` [T,R,K,A,M] and ``recall`` [T,K,A,M].
        params: ``COCOeval.params`` (``iouThrs``, ``areaRngLbl``, ``maxDets``).

    Returns:
        stats [12] (fractions, -1 where undefined) and the summary lines joined by newlines.
    """
    iou_thrs = np.asarray(params.iouThrs)
    area_lbls = list(params.areaRngLbl)
    max_dets = list(params.maxDets)
    top = max_dets[-1]
    rows = [
        (True, None, "all", top),
        (True, 0.5, "all", top),
        (True, 0.75, "all", top),
        (True, None, "small", top),
        (True, None, "medium", top),
        (True, None, "large", top),
        (False, None, "all", max_dets[0]),
        (False, None, "all", max_dets[1]),
        (False, None, "all", top),
        (False, None, "small", top),
        (False, None, "medium", top),
        (False, None, "large", top),
    ]
    template = " {:<18} {} @[ IoU={:<9} | area={:>6s} | maxDets={:>3d} ] = {:0.3f}"
    stats = np.full(len(rows), -1.0)
    lines = []
    for i, (is_ap, iou_thr, area, max_det) in enumerate(rows):
        values = np.asarray(eval_dict["precision" if is_ap else "recall"])
        if iou_thr is not None:
            values = values[np.isclose(iou_thrs, iou_thr)]
        a = area_lbls.index(area)
        m = max_dets.index(max_det)
        values = values[..., a, m]
        valid = values[values > -1]
        stats[i] = float(valid.mean()) if valid.size else -1.0
        iou_str = (
            f"{iou_thrs[0]:0.2f}:{iou_thrs[-1]:0.2f}" if iou_thr is None else f"{iou_thr:0.2f}"
        )
        title = "Average Precision" if is_ap else "Average Recall"
        kind = "(AP)" if is_ap else "(AR)"
        lines.append(template.format(title, kind, iou_str, area, max_det, stats[i]))
    return stats, "\n".join(lines)
