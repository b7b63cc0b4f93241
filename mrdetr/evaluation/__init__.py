"""Evaluation: the evaluator interface, the inference loop and COCO AP."""

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

__all__ = [
    "COCOEvaluator",
    "CocoEvalResult",
    "DatasetEvaluator",
    "DatasetEvaluators",
    "evaluate_coco",
    "inference_context",
    "inference_on_dataset",
    "instances_to_coco_json",
    "load_coco_api",
    "print_csv_format",
    "summarize_coco_eval",
]
