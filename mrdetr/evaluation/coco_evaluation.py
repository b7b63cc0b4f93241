"""COCO AP evaluation (bbox, segm) of a registered COCO-format dataset."""

from __future__ import annotations

import copy
import itertools
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
import torch

from mrdetr.data.catalog import MetadataCatalog
from mrdetr.structures import Boxes, Instances
from mrdetr.utils import comm
from mrdetr.utils.file_io import atomic_write
from mrdetr.utils.logger import format_table

from .coco_backends import BACKENDS, CocoEvalResult, evaluate_coco, import_backend, load_coco_api
from .evaluator import DatasetEvaluator

__all__ = ["COCOEvaluator", "instances_to_coco_json"]

logger = logging.getLogger(__name__)

TASKS = ("bbox", "segm")
# The six summary numbers reported per task, in the order of COCOeval stats[0:6].
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
RESULTS_FILE = "coco_instances_results.json"
PREDICTIONS_FILE = "instances_predictions.pth"


class COCOEvaluator(DatasetEvaluator):
    """COCO AP of instance detections (and masks) on a registered dataset.

    The dataset's metadata must have ``json_file`` (COCO-format ground truth); ``thing_classes`` and
    ``thing_dataset_id_to_contiguous_id`` are used to name classes and to map the model's
    contiguous class ids back to dataset category ids (identity when the mapping is absent).

    Args:
        dataset_name: name in ``MetadataCatalog``.
        tasks: subset of ("bbox", "segm"); ``None`` = "bbox", plus "segm" when the predictions
            carry ``pred_masks``.
        output_dir: where to write ``coco_instances_results.json`` and
            ``instances_predictions.pth``; ``None`` = write nothing.
        distributed: gather predictions from all processes (results on the main process only).
        backend: "pycocotools" or "faster_coco_eval" (``pip install faster-coco-eval``).
        max_dets_per_image: detections per image kept by COCOeval.
        per_class_table_columns: (class, AP) pairs per row of the logged per-class table.
    """

    def __init__(
        self,
        dataset_name: str,
        *,
        tasks: Iterable[str] | None = None,
        output_dir: str | None = None,
        distributed: bool = True,
        backend: str = "pycocotools",
        max_dets_per_image: int = 100,
        per_class_table_columns: int = 3,
    ):
        if backend not in BACKENDS:
            raise ValueError(
                f"COCOEvaluator: unknown backend '{backend}'; expected one of {BACKENDS}"
            )
        import_backend(backend)  # fail now, with the install hint, rather than after inference
        if tasks is not None:
            tasks = tuple(tasks)
            bad = [t for t in tasks if t not in TASKS]
            if bad or not tasks:
                raise ValueError(
                    f"COCOEvaluator: tasks={tasks} invalid; expected a subset of {TASKS}"
                )
        if max_dets_per_image < 1:
            raise ValueError(
                f"COCOEvaluator: max_dets_per_image must be >= 1, got {max_dets_per_image}"
            )
        self._dataset_name = dataset_name
        self._tasks = tasks
        self._output_dir = output_dir
        self._distributed = distributed
        self._backend = backend
        self._max_dets = max_dets_per_image
        self._table_columns = per_class_table_columns

        metadata = MetadataCatalog.get(dataset_name)
        json_file = metadata.get("json_file")
        if json_file is None:
            raise ValueError(
                f"COCOEvaluator: metadata of dataset '{dataset_name}' has no 'json_file'; register "
                "the dataset with the path of its COCO-format annotation file"
            )
        self._json_file = os.fspath(json_file)
        self._class_names: list[str] | None = metadata.get("thing_classes")
        id_map: Mapping[int, int] | None = metadata.get("thing_dataset_id_to_contiguous_id")
        self._dataset_to_contiguous = dict(id_map) if id_map else None
        self._contiguous_to_dataset = {v: k for k, v in id_map.items()} if id_map else None
        self._coco_api: Any = None
        self._predictions: list[dict] = []

    @property
    def coco_api(self) -> Any:
        """Ground truth, loaded on first use with the chosen backend."""
        if self._coco_api is None:
            if not os.path.isfile(self._json_file):
                raise FileNotFoundError(
                    f"COCOEvaluator: json_file '{self._json_file}' of dataset "
                    f"'{self._dataset_name}' does not exist"
                )
            self._coco_api = load_coco_api(self._json_file, self._backend)
        return self._coco_api

    def reset(self) -> None:
        self._predictions = []

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        """Convert each image's ``outputs[i]["instances"]`` to COCO results.

        Args:
            inputs: model inputs, each with ``image_id``.
            outputs: model outputs, each with ``instances``: ``Instances`` with ``pred_boxes``
                (``Boxes``, xyxy absolute in the original image), ``scores`` [K],
                ``pred_classes`` [K] (contiguous ids) and optionally ``pred_masks`` bool [K,H,W].
        """
        for inp, out in zip(inputs, outputs, strict=True):
            if "image_id" not in inp:
                raise KeyError(
                    f"COCOEvaluator('{self._dataset_name}'): model input has no 'image_id' "
                    f"(keys: {sorted(inp)})"
                )
            if "instances" not in out:
                continue
            image_id = inp["image_id"]
            instances = out["instances"].to("cpu")
            self._predictions.append(
                {
                    "image_id": image_id,
                    "instances": instances_to_coco_json(
                        instances, image_id, self._contiguous_to_dataset
                    ),
                }
            )

    def evaluate(self, img_ids: list[int] | None = None) -> dict[str, dict[str, float]]:
        """Gather predictions, write them, and compute COCO AP per task.

        Args:
            img_ids: evaluate only these image ids (default: every image of the dataset).

        Returns:
            ``{task: {"AP", "AP50", "AP75", "APs", "APm", "APl", "AP-<class>"...}}`` in percent on
            the main process (undefined numbers are NaN; classes without ground truth are left
            out); ``{}`` on the other processes.
        """
        if self._distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(self._predictions, dst=0)))
            if not comm.is_main_process():
                return {}
        else:
            predictions = self._predictions

        coco_results = list(itertools.chain(*(p["instances"] for p in predictions)))
        if img_ids is not None:
            keep = set(img_ids)
            coco_results = [r for r in coco_results if r["image_id"] in keep]
        tasks = self._tasks or _tasks_from_results(coco_results)
        if "segm" in tasks and coco_results and "segmentation" not in coco_results[0]:
            raise ValueError(
                f"COCOEvaluator('{self._dataset_name}'): task 'segm' asked for but the predictions "
                "have no 'pred_masks'"
            )
        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            path = os.path.join(self._output_dir, PREDICTIONS_FILE)
            atomic_write(path, lambda f: torch.save(predictions, f))
            path = os.path.join(self._output_dir, RESULTS_FILE)
            logger.info("Saving results to %s", path)
            atomic_write(path, lambda f: json.dump(coco_results, f), text=True)

        if len(coco_results) == 0:
            logger.warning(
                "COCOEvaluator('%s'): no predictions (%d images processed); reporting 0 AP",
                self._dataset_name,
                len(predictions),
            )
            return {task: dict.fromkeys(METRICS, 0.0) for task in tasks}

        results: dict[str, dict[str, float]] = {}
        for task in tasks:
            res = evaluate_coco(
                self.coco_api,
                coco_results,
                iou_type=task,
                backend=self._backend,
                max_dets_per_image=self._max_dets,
                img_ids=img_ids,
            )
            logger.info(
                "Evaluation of '%s' (%s, %s):\n%s",
                task,
                self._dataset_name,
                self._backend,
                res.summary,
            )
            results[task] = self._derive_results(res, task)
        return copy.deepcopy(results)

    def _class_name(self, cat_id: int) -> str:
        if self._class_names is not None:
            contiguous = (
                self._dataset_to_contiguous.get(cat_id)
                if self._dataset_to_contiguous is not None
                else cat_id
            )
            if contiguous is not None and 0 <= contiguous < len(self._class_names):
                return self._class_names[contiguous]
        return str(self.coco_api.cats.get(cat_id, {}).get("name", cat_id))

    def _derive_results(self, res: CocoEvalResult, task: str) -> dict[str, float]:
        """Percent metrics plus per-class AP (area "all", largest max-dets) of one task."""
        results = {
            name: float(res.stats[i] * 100) if res.stats[i] >= 0 else math.nan
            for i, name in enumerate(METRICS)
        }
        logger.info(
            "Evaluation results for %s:\n%s",
            task,
            format_table(list(METRICS), [[f"{results[m]:.3f}" for m in METRICS]]),
        )
        per_class = []
        for k, cat_id in enumerate(res.cat_ids):
            precision = res.precision[:, :, k, 0, -1]
            valid = precision[precision > -1]
            if valid.size == 0:
                continue
            per_class.append((self._class_name(cat_id), float(valid.mean() * 100)))
        if per_class:
            n = self._table_columns
            flat = [x for name, ap in per_class for x in (name, f"{ap:.3f}")]
            rows = [flat[i : i + 2 * n] for i in range(0, len(flat), 2 * n)]
            logger.info("Per-category %s AP:\n%s", task, format_table(["category", "AP"] * n, rows))
        results.update({f"AP-{name}": ap for name, ap in per_class})
        return results


def instances_to_coco_json(
    instances: Instances,
    image_id: int,
    contiguous_to_dataset_id: Mapping[int, int] | None = None,
) -> list[dict]:
    """Convert one image's predictions to COCO results.

    Args:
        instances: ``pred_boxes`` (``Boxes`` or tensor [K,4], xyxy absolute), ``scores`` [K],
            ``pred_classes`` [K] (contiguous ids), optional ``pred_masks`` bool [K,H,W].
        image_id: COCO image id.
        contiguous_to_dataset_id: maps contiguous ids to dataset category ids (None = identity).

    Returns:
        One dict per instance: ``image_id``, ``category_id``, ``bbox`` (xywh), ``score`` and,
        with masks, ``segmentation`` (RLE with ``counts`` as str).
    """
    num = len(instances)
    if num == 0:
        return []
    boxes = instances.pred_boxes
    boxes = boxes.tensor if isinstance(boxes, Boxes) else torch.as_tensor(boxes)
    boxes = boxes.detach().float().clone()
    boxes[:, 2:] -= boxes[:, :2]
    boxes = boxes.tolist()
    scores = instances.scores.detach().float().tolist()
    classes = [int(c) for c in instances.pred_classes.tolist()]
    if contiguous_to_dataset_id is not None:
        unknown = sorted({c for c in classes if c not in contiguous_to_dataset_id})
        if unknown:
            raise KeyError(
                f"instances_to_coco_json: predicted classes {unknown} are not in the dataset's "
                f"thing_dataset_id_to_contiguous_id (contiguous ids {sorted(contiguous_to_dataset_id)})"
            )
        classes = [int(contiguous_to_dataset_id[c]) for c in classes]
    rles = None
    if instances.has("pred_masks"):
        masks = instances.pred_masks.detach()
        if masks.is_floating_point():
            raise TypeError(
                "instances_to_coco_json: pred_masks must be bool [K,H,W] (threshold soft masks first), "
                f"got {masks.dtype}"
            )
        masks = masks.to(torch.uint8).cpu().numpy()
        rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
        for rle in rles:
            rle["counts"] = rle["counts"].decode("utf-8")
    results = []
    for k in range(num):
        result = {
            "image_id": image_id,
            "category_id": classes[k],
            "bbox": boxes[k],
            "score": scores[k],
        }
        if rles is not None:
            result["segmentation"] = rles[k]
        results.append(result)
    return results


def _tasks_from_results(coco_results: list[dict]) -> tuple[str, ...]:
    if any("segmentation" in r for r in coco_results):
        return ("bbox", "segm")
    return ("bbox",)
