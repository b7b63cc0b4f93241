"""COCO panoptic evaluator: PQ / SQ / RQ of a registered COCO panoptic dataset."""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from PIL import Image

from mrdetr.data.catalog import MetadataCatalog
from mrdetr.utils import comm
from mrdetr.utils.file_io import atomic_write
from mrdetr.utils.logger import format_table

from .evaluator import DatasetEvaluator
from .panoptic_quality import (
    PQStat,
    id_to_rgb,
    load_panoptic_categories,
    pq_compute_single_image,
    read_panoptic_png,
)

__all__ = ["COCOPanopticEvaluator"]

logger = logging.getLogger(__name__)

PREDICTIONS_JSON = "predictions.json"
PREDICTIONS_DIR = "panoptic_predictions"
# (row name, isthing filter, metric key suffix)
GROUPS = (("All", None, ""), ("Things", True, "_th"), ("Stuff", False, "_st"))
REQUIRED_METADATA = (
    "panoptic_json",
    "panoptic_root",
    "thing_dataset_id_to_contiguous_id",
    "stuff_dataset_id_to_contiguous_id",
)


class COCOPanopticEvaluator(DatasetEvaluator):
    """PQ / SQ / RQ (All, Things, Stuff, per class) on a registered COCO panoptic dataset.

    Metadata needed: ``panoptic_json``, ``panoptic_root``, ``thing_dataset_id_to_contiguous_id`` and
    ``stuff_dataset_id_to_contiguous_id`` (together: every dataset category id -> one contiguous
    space); ``stuff_classes`` (all category names, contiguous order) names the per-class results.
    Statistics are accumulated per image; prediction maps are not kept in memory.

    Args:
        dataset_name: name in ``MetadataCatalog``.
        output_dir: when set, write each prediction PNG to ``<output_dir>/panoptic_predictions/``
            during :meth:`process` and ``predictions.json`` in :meth:`evaluate` (COCO panoptic
            format, scorable by the official panopticapi). Must be visible to every process.
        distributed: gather statistics from all processes (results on the main process only).
        iou_threshold: match when IoU > this.
        ignore_fraction: void/crowd fraction above which an unmatched prediction is not a FP.
    """

    def __init__(
        self,
        dataset_name: str,
        *,
        output_dir: str | None = None,
        distributed: bool = True,
        iou_threshold: float = 0.5,
        ignore_fraction: float = 0.5,
    ):
        metadata = MetadataCatalog.get(dataset_name)
        for key in REQUIRED_METADATA:
            if metadata.get(key) is None:
                raise ValueError(
                    f"COCOPanopticEvaluator: metadata of dataset '{dataset_name}' has no '{key}'; "
                    f"register it with MetadataCatalog.get('{dataset_name}').set({key}=...) "
                    f"(needed: {', '.join(REQUIRED_METADATA)})"
                )
        self._dataset_name = dataset_name
        self._output_dir = os.fspath(output_dir) if output_dir else None
        self._distributed = distributed
        self._thresholds = {"iou_threshold": iou_threshold, "ignore_fraction": ignore_fraction}
        self._json_file = os.fspath(metadata.panoptic_json)
        self._root = os.fspath(metadata.panoptic_root)
        self._class_names: list[str] | None = metadata.get("stuff_classes")
        self._to_dataset: dict[int, int] = {}
        for key in REQUIRED_METADATA[2:]:
            for dataset_id, contiguous in dict(metadata.get(key)).items():
                if self._to_dataset.setdefault(int(contiguous), int(dataset_id)) != int(dataset_id):
                    raise ValueError(
                        f"COCOPanopticEvaluator('{dataset_name}'): contiguous id {contiguous} is "
                        "mapped from two dataset ids by the thing/stuff id maps"
                    )
        self._gt: tuple[dict[Any, dict], dict[int, dict[str, Any]]] | None = None
        self.reset()

    def reset(self) -> None:
        self._stats: dict[Any, PQStat] = {}
        self._pred_annotations: list[dict] = []

    def _ground_truth(self) -> tuple[dict[Any, dict], dict[int, dict[str, Any]]]:
        """(annotations by image_id, categories by dataset id), loaded once."""
        if self._gt is None:
            if not os.path.isfile(self._json_file):
                raise FileNotFoundError(
                    f"COCOPanopticEvaluator: panoptic_json '{self._json_file}' of dataset "
                    f"'{self._dataset_name}' does not exist"
                )
            with open(self._json_file) as f:
                data = json.load(f)
            categories = load_panoptic_categories(data, self._json_file)
            missing = sorted(set(self._to_dataset.values()) - set(categories))
            if missing:
                raise ValueError(
                    f"COCOPanopticEvaluator('{self._dataset_name}'): dataset ids {missing} of the "
                    f"id maps are not categories of '{self._json_file}'"
                )
            self._gt = ({a["image_id"]: a for a in data["annotations"]}, categories)
        return self._gt

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        """Score each image's ``outputs[i]["panoptic_seg"] = (seg [H, W] int, segments_info)``.

        Args:
            inputs: model inputs with ``image_id`` (and ``height``/``width``, checked when present).
            outputs: model outputs with ``panoptic_seg``; ``segments_info`` entries carry ``id`` and
                contiguous ``category_id``.
        """
        annotations, _ = self._ground_truth()
        name = f"COCOPanopticEvaluator('{self._dataset_name}')"
        for inp, out in zip(inputs, outputs, strict=True):
            image_id = inp.get("image_id")
            if image_id not in annotations:
                raise KeyError(f"{name}: image_id {image_id!r} is not in '{self._json_file}'")
            if "panoptic_seg" not in out:
                raise KeyError(f"{name}: model output has no 'panoptic_seg' (keys: {sorted(out)})")
            seg, segments_info = out["panoptic_seg"]
            seg = torch.as_tensor(seg).detach().cpu()
            if seg.is_floating_point() or seg.dim() != 2:
                raise ValueError(
                    f"{name}: image {image_id} panoptic_seg must be an int [H, W] map, "
                    f"got {seg.dtype} {tuple(seg.shape)}"
                )
            seg = seg.numpy().astype(np.int64)
            expected = (inp.get("height"), inp.get("width"))
            if None not in expected and seg.shape != expected:
                raise ValueError(
                    f"{name}: image {image_id} prediction map is {seg.shape}, "
                    f"expected (height, width) = {expected}"
                )
            gt_ann = annotations[image_id]
            gt_path = os.path.join(self._root, gt_ann["file_name"])
            if not os.path.isfile(gt_path):
                raise FileNotFoundError(
                    f"{name}: GT PNG '{gt_path}' of image {image_id} does not exist"
                )
            gt_ids = read_panoptic_png(gt_path)
            if gt_ids.shape != seg.shape:
                raise ValueError(
                    f"{name}: image {image_id} prediction map is {seg.shape} "
                    f"but GT PNG '{gt_path}' is {gt_ids.shape}"
                )
            pred_segments = [self._to_dataset_segment(s, image_id) for s in segments_info]
            try:
                stat = pq_compute_single_image(
                    gt_ids, gt_ann["segments_info"], seg, pred_segments, **self._thresholds
                )
            except ValueError as e:
                raise ValueError(f"{name}: image {image_id}: {e}") from e
            self._stats.setdefault(image_id, stat)
            if self._output_dir:
                self._write_png(seg, pred_segments, gt_ann)

    def _to_dataset_segment(self, segment: Mapping[str, Any], image_id: Any) -> dict[str, Any]:
        contiguous = int(segment["category_id"])
        if contiguous not in self._to_dataset:
            raise ValueError(
                f"COCOPanopticEvaluator('{self._dataset_name}'): image {image_id} segment "
                f"{segment['id']} has category_id {contiguous}, outside the contiguous space "
                f"{sorted(self._to_dataset)}"
            )
        out = {"id": int(segment["id"]), "category_id": self._to_dataset[contiguous], "iscrowd": 0}
        if "score" in segment:
            out["score"] = float(segment["score"])
        return out

    def _write_png(self, seg: np.ndarray, segments: list[dict], gt_ann: Mapping[str, Any]) -> None:
        folder = os.path.join(self._output_dir, PREDICTIONS_DIR)
        os.makedirs(folder, exist_ok=True)
        file_name = os.path.basename(gt_ann["file_name"])
        image = Image.fromarray(id_to_rgb(seg))
        atomic_write(os.path.join(folder, file_name), lambda f: image.save(f, format="PNG"))
        labels, counts = np.unique(seg, return_counts=True)
        areas = dict(zip(labels.tolist(), counts.tolist()))
        kept = [{**s, "area": areas[s["id"]]} for s in segments if areas.get(s["id"], 0) > 0]
        self._pred_annotations.append(
            {"image_id": gt_ann["image_id"], "file_name": file_name, "segments_info": kept}
        )

    def evaluate(self) -> dict[str, dict[str, float]]:
        """Gather statistics, write ``predictions.json``, and average PQ/SQ/RQ.

        Returns:
            ``{"panoptic_seg": {"PQ", "SQ", "RQ", "PQ_th", ..., "RQ_st", "PQ-<class>"...}}`` in
            percent on the main process (NaN for a group without categories); ``{}`` on the others.
        """
        stats, annotations = self._stats, self._pred_annotations
        if self._distributed:
            comm.synchronize()
            gathered = comm.gather((stats, annotations), dst=0)
            if not comm.is_main_process():
                return {}
            stats = {}
            for part, _ in gathered:
                for image_id, stat in part.items():
                    if image_id in stats:
                        logger.warning(
                            "COCOPanopticEvaluator: image %s scored twice; kept once", image_id
                        )
                    stats.setdefault(image_id, stat)
            annotations = list({a["image_id"]: a for _, anns in gathered for a in anns}.values())
        _, categories = self._ground_truth()
        if self._output_dir:
            path = os.path.join(self._output_dir, PREDICTIONS_JSON)
            data = {"annotations": annotations, "categories": list(categories.values())}
            logger.info("Saving panoptic predictions to %s", path)
            atomic_write(path, lambda f: json.dump(data, f), text=True)
        if not stats:
            logger.warning("COCOPanopticEvaluator('%s'): no image processed", self._dataset_name)
        total = PQStat()
        for stat in stats.values():
            total += stat
        return {"panoptic_seg": self._summarize(total, categories, len(stats))}

    def _summarize(
        self, total: PQStat, categories: dict[int, dict[str, Any]], num_images: int
    ) -> dict[str, float]:
        results: dict[str, float] = {}
        rows = []
        for group, isthing, suffix in GROUPS:
            avg, _ = total.pq_average(categories, isthing)
            for key in ("pq", "sq", "rq"):
                results[key.upper() + suffix] = 100 * avg[key]
            rows.append(
                [group] + [f"{100 * avg[k]:.3f}" for k in ("pq", "sq", "rq")] + [str(avg["n"])]
            )
        logger.info(
            "Panoptic evaluation of '%s' (%d images):\n%s",
            self._dataset_name,
            num_images,
            format_table(["", "PQ", "SQ", "RQ", "#categories"], rows),
        )
        from_dataset = {v: k for k, v in self._to_dataset.items()}
        _, per_class = total.pq_average(categories)
        for cat, values in per_class.items():
            contiguous = from_dataset.get(cat)
            if (
                self._class_names is not None
                and contiguous is not None
                and contiguous < len(self._class_names)
            ):
                name = self._class_names[contiguous]
            else:
                name = str(categories[cat].get("name", cat))
            results[f"PQ-{name}"] = 100 * values["pq"]
        return copy.deepcopy(results)
