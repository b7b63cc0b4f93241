"""Eval-time score fusion, top-K selection and rescaling of detections."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..structures import Boxes, Instances, box_cxcywh_to_xyxy, inverse_sigmoid


def fuse_layer_scores(
    layer_logits: Sequence[Tensor], exponents: tuple[float, float], eps: float = 1e-3
) -> Tensor:
    """Blend each decoder layer's scores with the previous layer's (official eval-time fusion).

    Layer 0: ``f_0 = sigmoid(l_0)``. Layer k >= 1: with ``p = sigmoid(l_k)`` and
    ``q = sigmoid(inverse_sigmoid(f_{k-1}))``, ``f_k = sqrt((p**a + q**b) / 2)``.

    Args:
        layer_logits: D tensors [B, Q, C], layer 0 first.
        exponents: (a, b), officially (2.001, 1.853).
        eps: clamp of ``inverse_sigmoid``.

    Returns:
        [B, Q, C] fused logits of the last layer, ``inverse_sigmoid(f_{D-1})``.
    """
    a, b = exponents
    fused = inverse_sigmoid(layer_logits[0].sigmoid(), eps)
    for logits in layer_logits[1:]:
        p = logits.sigmoid()
        q = fused.sigmoid()
        fused = inverse_sigmoid(torch.sqrt((p.pow(a) + q.pow(b)) / 2), eps)
    return fused


@dataclass
class TopKDetections:
    """The top-k (query, class) pairs of a batch.

    Attributes:
        instances: one ``Instances(pred_boxes, scores, pred_classes)`` per image, boxes in absolute
            xyxy of the (resized) input image.
        queries: [B, K] int64 query index of each detection (variants read per-query outputs, e.g.
            mask logits, with it).
    """

    instances: list[Instances]
    queries: Tensor


def topk_queries(logits: Tensor, boxes: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Top-k (query, class) pairs per image over the sigmoid scores of all Q x C entries.

    Args:
        logits: [B, Q, C] class logits.
        boxes: [B, Q, 4] normalised cxcywh.
        k: pairs kept per image (at most Q * C).

    Returns:
        scores [B, K] (sorted high to low), labels [B, K] int64, query indices [B, K] int64 and the
        boxes [B, K, 4] (normalised cxcywh) of those queries.
    """
    b, q, c = logits.shape
    prob = logits.sigmoid().view(b, -1)
    scores, index = torch.topk(prob, min(k, q * c), dim=1)
    query = torch.div(index, c, rounding_mode="floor")
    labels = index % c
    boxes = torch.gather(boxes, 1, query.unsqueeze(-1).expand(-1, -1, 4))
    return scores, labels, query, boxes


def topk_detections(
    logits: Tensor, boxes: Tensor, image_sizes: Sequence[tuple[int, int]], k: int
) -> TopKDetections:
    """Top-k (query, class) pairs per image over the sigmoid scores of all Q x C entries.

    Args:
        logits: [B, Q, C] class logits.
        boxes: [B, Q, 4] normalised cxcywh.
        image_sizes: (h, w) of each unpadded input image.
        k: detections kept per image (``select_box_nums_for_evaluation``; at most Q * C).

    Returns:
        the detections of every image and their query indices.
    """
    scores, labels, query, boxes = topk_queries(logits, boxes, k)
    results = []
    for i, (h, w) in enumerate(image_sizes):
        xyxy = box_cxcywh_to_xyxy(boxes[i]) * boxes.new_tensor([w, h, w, h])
        results.append(
            Instances((h, w), pred_boxes=Boxes(xyxy), scores=scores[i], pred_classes=labels[i])
        )
    return TopKDetections(results, query)


def detector_postprocess(results: Instances, output_height: int, output_width: int) -> Instances:
    """Rescale detections from the input-image frame to (output_height, output_width), clip, and
    drop empty boxes.

    Args:
        results: detections with ``pred_boxes`` in the frame of ``results.image_size``.
        output_height: requested height (e.g. the original image's).
        output_width: requested width.
    """
    scale_x = output_width / results.image_size[1]
    scale_y = output_height / results.image_size[0]
    out = Instances((int(output_height), int(output_width)), **results.get_fields())
    boxes = out.pred_boxes
    boxes.scale(scale_x, scale_y)
    boxes.clip(out.image_size)
    return out[boxes.nonempty()]
