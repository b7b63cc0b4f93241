"""Route diagnostics: what each decoder route of a Mr. DETR checkpoint predicts, and why it scores so.

The primary (one-to-one) route is the only one kept at inference; the auxiliary one-to-many routes
exist to train the shared weights. Whether they help shows in three numbers per route:

- bbox AP of the raw top-K output, and after class-wise NMS: a one-to-one route needs no NMS, so a large
  gap between the two means the route still emits duplicates;
- duplicates per found object: for every ground-truth box, the detections of its class with a score
  at or above ``score_threshold`` and an IoU at or above ``match_iou``; averaged over the boxes that
  have at least one (a perfectly one-to-one route gives 1.0);
- the one-to-many assigner's positives on the route's own predictions: the fraction of queries that
  are matched, and the matches per ground-truth box (what the auxiliary loss pushes towards).

``run_route_diagnostics`` evaluates a model on a data loader; the functions it is built from take
plain tensors and are tested on hand-built predictions.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.ops import batched_nms

from ..data.catalog import MetadataCatalog
from ..modeling.outputs import RawOutput
from ..modeling.routes import Route
from ..structures import Instances, box_iou, box_xyxy_to_cxcywh
from .coco_backends import evaluate_coco, load_coco_api
from .coco_evaluation import instances_to_coco_json

__all__ = [
    "RouteDiagnostics",
    "checkpoint_iteration",
    "classwise_nms",
    "duplicate_counts",
    "one_to_many_positives",
    "run_route_diagnostics",
    "summary_line",
]

_PERCENT = 100.0
_AP, _AP50 = 0, 1  # indices of AP and AP50 in COCOeval's stats


def classwise_nms(instances: Instances, iou_threshold: float) -> Instances:
    """Keep, per class, the detections that no higher-scoring detection overlaps by more than
    ``iou_threshold`` (torchvision ``batched_nms``), in descending score order.

    Args:
        instances: ``pred_boxes`` (xyxy), ``scores`` [K], ``pred_classes`` [K].
        iou_threshold: IoU above which the lower-scoring box of a pair is dropped.
    """
    keep = batched_nms(
        instances.pred_boxes.tensor.float(),
        instances.scores.float(),
        instances.pred_classes,
        iou_threshold,
    )
    return instances[keep]


def duplicate_counts(
    pred_boxes: Tensor,
    pred_scores: Tensor,
    pred_classes: Tensor,
    gt_boxes: Tensor,
    gt_classes: Tensor,
    *,
    score_threshold: float,
    match_iou: float,
) -> Tensor:
    """Detections that hit each ground-truth box: same class, score >= ``score_threshold`` and IoU
    >= ``match_iou``.

    Args:
        pred_boxes: [K, 4] xyxy detections.
        pred_scores: [K].
        pred_classes: [K] int64.
        gt_boxes: [N, 4] xyxy ground truth in the same frame.
        gt_classes: [N] int64.
        score_threshold: lowest score of a counted detection.
        match_iou: lowest IoU of a counted detection.

    Returns:
        int64 [N]: detections per ground-truth box (0: missed).
    """
    if gt_boxes.numel() == 0 or pred_boxes.numel() == 0:
        return torch.zeros(gt_boxes.shape[0], dtype=torch.int64)
    confident = pred_scores >= score_threshold
    iou = box_iou(gt_boxes.float(), pred_boxes.float())
    hit = (iou >= match_iou) & (gt_classes[:, None] == pred_classes[None, :]) & confident[None, :]
    return hit.sum(dim=1)


def one_to_many_positives(
    assigner: nn.Module,
    logits: Tensor,
    boxes: Tensor,
    labels: Tensor,
    gt_boxes: Tensor,
    generator: torch.Generator | None = None,
) -> tuple[int, int]:
    """What the one-to-many assigner gives on one image's predictions.

    Args:
        assigner: a one-to-many assigner called as ``assigner(logits, boxes, targets, generator)``
            (e.g. ``OneToManyAssigner``).
        logits: [Q, C] class logits of one route.
        boxes: [Q, 4] normalised cxcywh boxes.
        labels: [N] int64 ground-truth classes.
        gt_boxes: [N, 4] normalised cxcywh ground truth.
        generator: random generator of the assigner's subsampling.

    Returns:
        (distinct matched queries, matches): a query matched to two boxes counts once in the first
        number and twice in the second.
    """
    targets = [{"labels": labels, "boxes": gt_boxes}]
    query_idx, _ = assigner(logits[None], boxes[None], targets, generator)[0]
    return int(query_idx.unique().numel()), int(query_idx.numel())


@dataclass
class _RouteTally:
    raw: list[dict] = field(default_factory=list)
    nms: list[dict] = field(default_factory=list)
    hits_raw: list[Tensor] = field(default_factory=list)
    hits_nms: list[Tensor] = field(default_factory=list)
    queries: int = 0
    positive_queries: int = 0
    matches: int = 0
    objects: int = 0


class RouteDiagnostics:
    """Accumulates per-route detections of a dataset and computes the diagnostics.

    Args:
        dataset_name: registered dataset with a COCO-format ``json_file`` (the ground truth).
        routes: routes to diagnose.
        nms_iou: IoU of the class-wise NMS.
        score_threshold: lowest score of a detection counted as a duplicate.
        match_iou: lowest IoU of a detection counted as hitting a ground-truth box.
        max_dets_per_image: COCOeval's detections per image.
        assigner: one-to-many assigner for the positive counts (None: not counted).
        seed: seed of the assigner's random subsampling (the counts are then reproducible).
    """

    def __init__(
        self,
        dataset_name: str,
        routes: Sequence[Route],
        *,
        nms_iou: float = 0.7,
        score_threshold: float = 0.3,
        match_iou: float = 0.5,
        max_dets_per_image: int = 100,
        assigner: nn.Module | None = None,
        seed: int = 0,
    ):
        metadata = MetadataCatalog.get(dataset_name)
        json_file = metadata.get("json_file")
        if json_file is None:
            raise ValueError(
                f"RouteDiagnostics: dataset '{dataset_name}' has no 'json_file' (ground truth)"
            )
        self.dataset_name = dataset_name
        self.routes = tuple(Route(r) for r in routes)
        self.nms_iou = nms_iou
        self.score_threshold = score_threshold
        self.match_iou = match_iou
        self.max_dets = max_dets_per_image
        self.assigner = assigner
        self._generator = torch.Generator().manual_seed(seed)
        self._coco = load_coco_api(str(json_file))
        # the loader's convention (``load_coco_json``): sorted category ids -> 0..C-1; the metadata
        # holds it only once the dataset has been loaded
        id_map = metadata.get("thing_dataset_id_to_contiguous_id") or {
            cat_id: i for i, cat_id in enumerate(sorted(self._coco.getCatIds()))
        }
        self._to_contiguous = dict(id_map)
        self._to_dataset = {v: k for k, v in id_map.items()}
        self._tally = {route: _RouteTally() for route in self.routes}

    def ground_truth(self, image_id: int) -> tuple[Tensor, Tensor]:
        """Non-crowd ground truth of one image: xyxy boxes [N, 4] (original frame), classes [N]."""
        anns = self._coco.loadAnns(self._coco.getAnnIds(imgIds=[image_id], iscrowd=False))
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        cats = [self._to_contiguous[a["category_id"]] for a in anns]
        return boxes, torch.tensor(cats, dtype=torch.int64)

    def process(
        self,
        inputs: list[dict],
        detections: dict[Route, list[Instances]],
        raw: dict[Route, RawOutput] | None = None,
    ) -> None:
        """Add one batch.

        Args:
            inputs: the model inputs, each with ``image_id`` (and ``height``/``width``).
            detections: per route, one ``Instances`` per image in the original image frame.
            raw: per route, the raw logits/boxes (normalised cxcywh) for the assigner counts.
        """
        for route in self.routes:
            tally = self._tally[route]
            for i, (inp, det) in enumerate(zip(inputs, detections[route], strict=True)):
                det = det.to("cpu")
                image_id = inp["image_id"]
                gt_boxes, gt_classes = self.ground_truth(image_id)
                after_nms = classwise_nms(det, self.nms_iou)
                for name, kept in (("raw", det), ("nms", after_nms)):
                    getattr(tally, name).extend(
                        instances_to_coco_json(kept, image_id, self._to_dataset)
                    )
                    hits = duplicate_counts(
                        kept.pred_boxes.tensor, kept.scores, kept.pred_classes, gt_boxes,
                        gt_classes, score_threshold=self.score_threshold, match_iou=self.match_iou,
                    )  # fmt: skip
                    getattr(tally, f"hits_{name}").append(hits)
                if raw is not None and self.assigner is not None and gt_boxes.numel():
                    h, w = det.image_size
                    scale = gt_boxes.new_tensor([w, h, w, h])
                    cxcywh = box_xyxy_to_cxcywh(gt_boxes / scale)
                    out = raw[route]
                    positive, matches = one_to_many_positives(
                        self.assigner, out.pred_logits[i].cpu().float(),
                        out.pred_boxes[i].cpu().float(), gt_classes, cxcywh, self._generator,
                    )  # fmt: skip
                    tally.queries += out.pred_logits.shape[1]
                    tally.positive_queries += positive
                    tally.matches += matches
                    tally.objects += int(gt_boxes.shape[0])

    def _ap(self, results: list[dict]) -> tuple[float, float]:
        if not results:
            return 0.0, 0.0
        res = evaluate_coco(self._coco, results, iou_type="bbox", max_dets_per_image=self.max_dets)
        return float(res.stats[_AP]) * _PERCENT, float(res.stats[_AP50]) * _PERCENT

    def evaluate(self) -> dict[str, Any]:
        """``{"routes": {route: metrics}, "settings": {...}}``; see the module docstring."""
        report: dict[str, Any] = {
            "settings": {
                "dataset": self.dataset_name,
                "nms_iou": self.nms_iou,
                "score_threshold": self.score_threshold,
                "match_iou": self.match_iou,
            },
            "routes": {},
        }
        for route, tally in self._tally.items():
            metrics: dict[str, float] = {}
            for name in ("raw", "nms"):
                ap, ap50 = self._ap(getattr(tally, name))
                suffix = "" if name == "raw" else "_nms"
                hits = torch.cat(
                    getattr(tally, f"hits_{name}") or [torch.zeros(0, dtype=torch.int64)]
                )
                found = hits[hits > 0]
                metrics[f"AP{suffix}"] = ap
                metrics[f"AP50{suffix}"] = ap50
                metrics[f"dups_per_object{suffix}"] = (
                    float(found.float().mean()) if found.numel() else 0.0
                )
                metrics[f"found_fraction{suffix}"] = float(found.numel() / max(hits.numel(), 1))
            if tally.queries:
                metrics["o2m_positive_fraction"] = tally.positive_queries / tally.queries
                metrics["o2m_matches_per_object"] = tally.matches / max(tally.objects, 1)
            report["routes"][route.value] = metrics
        return report


def _route_detections(
    model: nn.Module, batched_inputs: list[dict], routes: Sequence[Route]
) -> tuple[dict[Route, list[Instances]], dict[Route, RawOutput]]:
    """Every route's top-K detections (original image frame) and raw output for one batch, each
    through the same eval-time score fusion and post-processing as the primary route."""
    out = model.forward_features(batched_inputs, tuple(routes))
    detections, raw = {}, {}
    for route in routes:
        layers = out.routes[route].layers
        raw[route] = RawOutput(model.final_logits(layers), layers[-1].boxes, out.image_sizes)
        detections[route] = [r["instances"] for r in model.postprocess(raw[route], batched_inputs)]
    return detections, raw


@torch.no_grad()
def run_route_diagnostics(
    model: nn.Module,
    data_loader: Iterable[list[dict]],
    dataset_name: str,
    *,
    routes: Sequence[Route | str] = (Route.PRIMARY, Route.INSTRUCT, Route.SEP_FFN),
    nms_iou: float = 0.7,
    score_threshold: float = 0.3,
    match_iou: float = 0.5,
    seed: int = 0,
) -> dict[str, Any]:
    """Route diagnostics of ``model`` on a dataset (see :class:`RouteDiagnostics`).

    The one-to-many positives use the model's own assigner (``model.criterion.one_to_many_matcher``)
    when it has one. The top-level ``"one_to_many"`` entry averages them over the routes the model
    trains one-to-many (its ``train_routes``), or over the primary route when it trains none: what
    the auxiliary loss would see.
    """
    routes = tuple(Route(r) for r in routes)
    criterion = getattr(model, "criterion", None)
    assigner = getattr(criterion, "one_to_many_matcher", None)
    diag = RouteDiagnostics(
        dataset_name, routes, nms_iou=nms_iou, score_threshold=score_threshold,
        match_iou=match_iou, assigner=assigner, seed=seed,
        max_dets_per_image=max(100, getattr(model, "select_box_nums_for_evaluation", 100)),
    )  # fmt: skip
    was_training = model.training
    model.eval()
    try:
        for batch in data_loader:
            detections, raw = _route_detections(model, batch, routes)
            diag.process(batch, detections, raw)
    finally:
        model.train(was_training)
    report = diag.evaluate()
    trained = [r for r in getattr(model, "train_routes", ()) if r.is_one_to_many and r in routes]
    used = trained or [Route.PRIMARY]
    values = [
        report["routes"][r.value]
        for r in used
        if "o2m_positive_fraction" in report["routes"][r.value]
    ]
    if values:
        report["one_to_many"] = {
            "routes": [r.value for r in used],
            "positive_fraction": sum(v["o2m_positive_fraction"] for v in values) / len(values),
            "matches_per_object": sum(v["o2m_matches_per_object"] for v in values) / len(values),
        }
    return report


def summary_line(report: dict[str, Any]) -> str:
    """One log line: per route, raw AP, AP after NMS and duplicates per found object."""
    return "; ".join(
        f"{route} AP {m['AP']:.1f} (NMS {m['AP_nms']:.1f}), {m['dups_per_object']:.2f} dups/object"
        for route, m in report["routes"].items()
    )


def checkpoint_iteration(path: str | os.PathLike) -> int:
    """Optimizer steps behind a periodic checkpoint: ``model_0000174.pth`` is saved after iteration
    174 (0-based), i.e. after 175 steps, the iteration at which its evaluation is logged."""
    stem = Path(path).stem
    number = stem.rsplit("_", 1)[-1]
    if not number.isdigit():
        raise ValueError(f"checkpoint_iteration: '{path}' is not a model_XXXXXXX.pth checkpoint")
    return int(number) + 1
