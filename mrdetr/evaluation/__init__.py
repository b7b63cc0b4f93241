"""Evaluation: the evaluator interface, the inference loop, COCO AP and COCO panoptic quality."""

from __future__ import annotations

from .coco_backends import CocoEvalResult, evaluate_coco, load_coco_api, summarize_coco_eval
from .coco_evaluation import COCOEvaluator, instances_to_coco_json
from .evaluator import (
    DatasetEvaluator,
    DatasetEvaluators,
    inference_context,
    inference_on_dataset,
    print_csv_format,
)
from .panoptic_evaluation import COCOPanopticEvaluator
from .panoptic_quality import (
    PQCategoryStat,
    PQStat,
    pq_compute_from_files,
    pq_compute_single_image,
    read_panoptic_png,
)

__all__ = [
    "COCOEvaluator",
    "COCOPanopticEvaluator",
    "CocoEvalResult",
    "DatasetEvaluator",
    "DatasetEvaluators",
    "evaluate_coco",
    "inference_context",
    "inference_on_dataset",
    "instances_to_coco_json",
    "load_coco_api",
    "pq_compute_from_files",
    "pq_compute_single_image",
    "PQCategoryStat",
    "PQStat",
    "print_csv_format",
    "read_panoptic_png",
    "summarize_coco_eval",
]
