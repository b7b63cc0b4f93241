"""Mr. DETR(++) panoptic segmentation: things and stuff as queries of one class space (DETR-panoptic style).

Design (the paper states panoptic results but not how; this is our choice, see ``docs/panoptic.md``):
every panoptic segment, thing or stuff, is a target with a class, a box (its extent) and a mask, and the
classifier covers all categories at once (COCO: 80 things + 53 stuff = 133). Training is therefore exactly
instance segmentation (:class:`MrDETRInstanceSeg`, all three routes, the same losses); only inference
differs: the primary route's queries are turned into a non-overlapping panoptic map.

Inference per image (Mask2Former-style merging, with sigmoid scores):

1. each query's score and class: the max over classes of the fused class probabilities;
2. keep queries with score > ``object_mask_threshold``;
3. every pixel goes to the kept query with the largest ``score * mask_probability``;
4. a query keeps the pixels it won where its own mask probability is >= the mask threshold; it becomes a
   segment when that area is at least ``overlap_threshold`` of its own mask's area (else it is mostly
   hidden behind better queries: dropped) and at least ``min_segment_area`` pixels;
5. all segments of one stuff class are merged into one segment; pixels nobody keeps are void (id 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ...structures import Boxes, Instances
from .mr_detr_insseg import MrDETRInstanceSeg, SegRawOutput, resize_mask_logits

__all__ = ["MrDETRPanoptic", "merge_panoptic", "panoptic_to_instances"]


class MrDETRPanoptic(MrDETRInstanceSeg):
    """Mr. DETR with panoptic output ``{"panoptic_seg": (ids [H, W] int32, segments_info)}``.

    Args:
        thing_class_ids: contiguous class ids that are things; every other class of the ``num_classes``
            is stuff (COCO panoptic: ``range(80)`` of 133).
        object_mask_threshold: minimum query score to take part in the panoptic map.
        overlap_threshold: minimum fraction of a query's own mask that it must keep after overlaps are
            resolved.
        min_segment_area: segments with fewer pixels (in the output image) are dropped.
        **kwargs: :class:`MrDETRInstanceSeg` arguments (``mask_threshold`` is the mask logit threshold).
    """

    def __init__(
        self,
        *,
        thing_class_ids: Sequence[int],
        object_mask_threshold: float = 0.25,
        overlap_threshold: float = 0.8,
        min_segment_area: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        thing_class_ids = sorted({int(c) for c in thing_class_ids})
        bad = [c for c in thing_class_ids if not 0 <= c < self.num_classes]
        if bad:
            raise ValueError(
                f"MrDETRPanoptic: thing_class_ids {bad} are outside [0, num_classes={self.num_classes})"
            )
        if not 0.0 <= overlap_threshold <= 1.0:
            raise ValueError(
                f"MrDETRPanoptic: overlap_threshold must be in [0, 1], got {overlap_threshold}"
            )
        self.thing_class_ids = thing_class_ids
        self.object_mask_threshold = object_mask_threshold
        self.overlap_threshold = overlap_threshold
        self.min_segment_area = min_segment_area
        is_thing = torch.zeros(self.num_classes, dtype=torch.bool)
        is_thing[thing_class_ids] = True
        self.register_buffer("is_thing", is_thing, persistent=False)

    def postprocess(self, raw: SegRawOutput, batched_inputs: list[dict]) -> list[dict]:
        """One ``{"panoptic_seg": (ids, segments_info), "instances": Instances}`` per image, at the
        original image size.

        ``ids`` is int32 [height, width] (0 = void); ``segments_info`` lists ``{"id", "category_id"
        (contiguous), "isthing", "score", "area"}``; ``instances`` holds the same segments as
        ``pred_masks``/``pred_boxes`` (their extents)/``scores``/``pred_classes``, for drawing.
        """
        probs = raw.pred_logits.sigmoid()
        scores, labels = probs.max(-1)
        results = []
        for i, (inp, (h, w)) in enumerate(zip(batched_inputs, raw.image_sizes, strict=True)):
            out_size = (int(inp.get("height", h)), int(inp.get("width", w)))
            keep = scores[i] > self.object_mask_threshold
            mask_logits = resize_mask_logits(
                raw.pred_masks[i, keep], raw.padded_size, (h, w), out_size
            )
            panoptic = merge_panoptic(
                scores[i, keep],
                labels[i, keep],
                mask_logits,
                self.is_thing,
                mask_threshold=self.mask_threshold,
                overlap_threshold=self.overlap_threshold,
                min_segment_area=self.min_segment_area,
            )
            results.append(
                {"panoptic_seg": panoptic, "instances": panoptic_to_instances(*panoptic)}
            )
        return results


def merge_panoptic(
    scores: Tensor,
    labels: Tensor,
    mask_logits: Tensor,
    is_thing: Tensor,
    *,
    mask_threshold: float,
    overlap_threshold: float,
    min_segment_area: int,
) -> tuple[Tensor, list[dict]]:
    """Resolve overlapping query masks into one panoptic map (steps 3-5 of the module docstring).

    Args:
        scores: [K] scores of the kept queries.
        labels: [K] their contiguous classes.
        mask_logits: [K, H, W] their mask logits at the output size.
        is_thing: [C] bool, True for thing classes.
        mask_threshold: mask logit threshold of a query's own mask.
        overlap_threshold: minimum kept fraction of a query's own mask.
        min_segment_area: minimum segment area in pixels.

    Returns:
        (ids int32 [H, W] with 0 = void, segments_info list of dicts).
    """
    height, width = mask_logits.shape[-2:]
    ids = torch.zeros((height, width), dtype=torch.int32, device=mask_logits.device)
    segments: list[dict] = []
    if mask_logits.shape[0] == 0:
        return ids, segments
    own = mask_logits > mask_threshold  # [K, H, W]
    owner = (scores[:, None, None] * mask_logits.sigmoid()).argmax(0)  # [H, W]
    stuff_segment: dict[int, dict] = {}
    for k in range(mask_logits.shape[0]):
        mask = (owner == k) & own[k]
        area, own_area = int(mask.sum()), int(own[k].sum())
        if area == 0 or own_area == 0 or area < min_segment_area:
            continue
        if area / own_area < overlap_threshold:
            continue
        label = int(labels[k])
        thing = bool(is_thing[label])
        if not thing and label in stuff_segment:
            segment = stuff_segment[label]
            segment["area"] += area
            segment["score"] = max(segment["score"], float(scores[k]))
            ids[mask] = segment["id"]
            continue
        segment = {
            "id": len(segments) + 1,
            "category_id": label,
            "isthing": thing,
            "score": float(scores[k]),
            "area": area,
        }
        segments.append(segment)
        if not thing:
            stuff_segment[label] = segment
        ids[mask] = segment["id"]
    return ids, segments


def panoptic_to_instances(ids: Tensor, segments_info: list[dict]) -> Instances:
    """The segments of a panoptic map as ``Instances`` (bool masks, their extents as xyxy boxes).

    Args:
        ids: [H, W] segment id map (0 = void).
        segments_info: ``{"id", "category_id", "score"}`` per segment.
    """
    seg_ids = ids.new_tensor([s["id"] for s in segments_info]).view(-1, 1, 1)
    masks = ids[None] == seg_ids  # [S, H, W]
    ys, xs = masks.any(2), masks.any(1)  # [S, H], [S, W]
    rows = torch.arange(ids.shape[0], device=ids.device)
    cols = torch.arange(ids.shape[1], device=ids.device)
    boxes = torch.stack(
        [
            torch.where(xs, cols, ids.shape[1]).amin(1),
            torch.where(ys, rows, ids.shape[0]).amin(1),
            torch.where(xs, cols, -1).amax(1) + 1,
            torch.where(ys, rows, -1).amax(1) + 1,
        ],
        dim=1,
    ).float()
    return Instances(
        tuple(ids.shape),
        pred_boxes=Boxes(boxes),
        scores=torch.tensor([float(s.get("score", 1.0)) for s in segments_info]),
        pred_classes=torch.tensor([int(s["category_id"]) for s in segments_info], dtype=torch.long),
        pred_masks=masks,
    )
