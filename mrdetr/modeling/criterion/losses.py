"""Functional detection losses: sigmoid focal classification, L1 and GIoU box losses.

Every loss returns the *sum* over its elements divided by a normaliser (the number of GT boxes, or a
multiple of it), as in the official criterion.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from mrdetr.structures import box_cxcywh_to_xyxy, paired_generalized_box_iou

__all__ = [
    "giou_loss",
    "l1_loss",
    "sigmoid_focal_loss",
]


def sigmoid_focal_loss(
    logits: Tensor,
    targets_onehot: Tensor,
    num_boxes: float,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> Tensor:
    """Sigmoid focal loss summed over all elements and divided by ``num_boxes``.

    ``loss = sum(BCE_with_logits(x, t) * (1 - p_t)^gamma * alpha_t) / num_boxes`` with
    ``p_t = p t + (1 - p)(1 - t)`` and ``alpha_t = alpha t + (1 - alpha)(1 - t)``; a negative ``alpha``
    disables the alpha weighting.

    Args:
        logits: [B, Q, C] class logits.
        targets_onehot: [B, Q, C] targets in [0, 1], same dtype as ``logits``.
        num_boxes: normaliser.
        alpha: weight of the positives (``1 - alpha`` for the negatives).
        gamma: focusing exponent.

    Returns:
        Scalar loss.
    """
    prob = logits.sigmoid()
    ce_loss = F.binary_cross_entropy_with_logits(logits, targets_onehot, reduction="none")
    p_t = prob * targets_onehot + (1 - prob) * (1 - targets_onehot)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * targets_onehot + (1 - alpha) * (1 - targets_onehot)
        loss = alpha_t * loss
    return loss.sum() / num_boxes


def l1_loss(src_boxes: Tensor, target_boxes: Tensor, num_boxes: float) -> Tensor:
    """L1 distance of matched boxes, summed over pairs and coordinates, divided by ``num_boxes``.

    Args:
        src_boxes: [M, 4] predicted normalised cxcywh boxes of the matched pairs.
        target_boxes: [M, 4] their GT boxes, normalised cxcywh.
        num_boxes: normaliser.

    Returns:
        Scalar loss (0 for M = 0, still connected to ``src_boxes``).
    """
    return F.l1_loss(src_boxes, target_boxes, reduction="none").sum() / num_boxes


def giou_loss(
    src_boxes: Tensor,
    target_boxes: Tensor,
    num_boxes: float,
    pair_weights: Tensor | None = None,
) -> Tensor:
    """``sum(1 - GIoU)`` of matched boxes divided by ``num_boxes``.

    Args:
        src_boxes: [M, 4] predicted normalised cxcywh boxes of the matched pairs.
        target_boxes: [M, 4] their GT boxes, normalised cxcywh.
        num_boxes: normaliser.
        pair_weights: optional [M] per-pair weights (the Align variant's rank weights).

    Returns:
        Scalar loss (0 for M = 0, still connected to ``src_boxes``).
    """
    loss = 1 - paired_generalized_box_iou(
        box_cxcywh_to_xyxy(src_boxes), box_cxcywh_to_xyxy(target_boxes)
    )
    if pair_weights is not None:
        loss = loss * pair_weights
    return loss.sum() / num_boxes
