"""Mr. DETR-Align: the IoU-aware BCE ("IA-BCE") class loss with rank weights.

For the matched pairs ``(query q, GT g, class c)`` the soft target is
``t = p_qc^alpha * IoU(q, g)^(1 - alpha)``, clamped to ``>= min_quality`` and detached. On the one-to-many
routes (``userank``) the matched queries of each GT of each image are ranked by ``t`` (descending, rank
``r = 0, 1, ...``) and ``t <- t * exp(-r / tau)``; the same per-pair rank weights multiply the GIoU terms
(returned explicitly, no object state). The loss over all (query, class) entries is
``sum(-w_pos * log p - w_neg * log(1 - p)) / normaliser`` with ``w_pos = t, w_neg = 1 - t`` at matched
entries and ``w_pos = 0, w_neg = p^gamma`` (not detached) elsewhere. Everything is float32 and uses
log-sigmoid forms, so saturated logits give finite values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mrdetr.modeling.matcher import HungarianMatcher, MatchIndices, OneToManyAssigner, Targets
from mrdetr.structures import box_cxcywh_to_xyxy, paired_box_iou

from .dn_criterion import DNCriterion

__all__ = ["AlignCriterion", "ia_bce_loss", "rank_weights"]


def rank_weights(quality: Tensor, group: Tensor, tau: float) -> Tensor:
    """``exp(-r / tau)`` with r the rank of each pair's quality within its group (0 = best).

    Args:
        quality: [M] pair qualities.
        group: [M] int64 group id of each pair (one id per (image, GT)).
        tau: temperature.

    Returns:
        [M] weights (1, 0.51, 0.26, ... for tau = 1.5); ties keep the pairs' order.
    """
    num = quality.shape[0]
    if num == 0:
        return quality.new_ones(0)
    order = torch.argsort(quality, descending=True, stable=True)
    order = order[torch.argsort(group[order], stable=True)]
    sorted_group = group[order]
    position = torch.arange(num, device=quality.device)
    is_start = torch.ones(num, dtype=torch.bool, device=quality.device)
    is_start[1:] = sorted_group[1:] != sorted_group[:-1]
    start = torch.cummax(torch.where(is_start, position, 0), dim=0).values
    rank = torch.empty_like(position)
    rank[order] = position - start
    return torch.exp(-rank.to(quality.dtype) / tau)


def ia_bce_loss(
    logits: Tensor,
    positive_index: tuple[Tensor, Tensor, Tensor],
    soft_targets: Tensor,
    normalizer: float,
    gamma: float = 2.0,
) -> Tensor:
    """IoU-aware BCE over every (query, class) entry.

    Args:
        logits: [B, Q, C] float logits.
        positive_index: (image, query, class) int64 [M] of the matched entries.
        soft_targets: [M] detached targets t of those entries.
        normalizer: divides the sum.
        gamma: exponent of the negatives' weight ``p^gamma``.

    Returns:
        Scalar loss.
    """
    log_p = F.logsigmoid(logits)
    log_not_p = F.logsigmoid(-logits)
    positive = torch.zeros_like(logits, dtype=torch.bool).index_put(
        positive_index, torch.ones_like(soft_targets, dtype=torch.bool)
    )
    pos_weight = torch.zeros_like(logits).index_put(positive_index, soft_targets.to(logits.dtype))
    neg_weight = torch.where(positive, 1 - pos_weight, logits.sigmoid() ** gamma)
    return -(pos_weight * log_p + neg_weight * log_not_p).sum() / normalizer


class AlignCriterion(DNCriterion):
    """DN criterion whose class loss is IA-BCE, with rank weights on the one-to-many routes.

    Args:
        num_classes: C.
        matcher: one-to-one matcher (primary route, DN-free encoder matching).
        one_to_many_matcher: assigner of the one-to-many routes.
        encoder_matcher: matcher of the encoder heads.
        encoder_match_on_anchors: see :class:`MrDETRCriterion` (False for Align).
        one_to_many_normalizer_scale: see :class:`MrDETRCriterion` (3 for Align).
        align_alpha: exponent of the score in the soft target (IoU gets ``1 - alpha``).
        align_gamma: exponent of the negatives' weight ``p^gamma``.
        rank_tau: temperature of the rank weights ``exp(-r / tau)``.
        min_quality: lower clamp of the soft target.
        focal_alpha: unused by the class loss (kept for the base class).
        focal_gamma: unused by the class loss (kept for the base class).
        log_route_stats: see :class:`MrDETRCriterion`.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        matcher: HungarianMatcher,
        one_to_many_matcher: OneToManyAssigner,
        encoder_matcher: HungarianMatcher,
        encoder_match_on_anchors: bool = False,
        one_to_many_normalizer_scale: float = 3.0,
        align_alpha: float = 0.25,
        align_gamma: float = 2.0,
        rank_tau: float = 1.5,
        min_quality: float = 0.01,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        log_route_stats: bool = False,
    ):
        super().__init__(
            num_classes=num_classes,
            matcher=matcher,
            one_to_many_matcher=one_to_many_matcher,
            encoder_matcher=encoder_matcher,
            focal_alpha=focal_alpha,
            focal_gamma=focal_gamma,
            encoder_match_on_anchors=encoder_match_on_anchors,
            one_to_many_normalizer_scale=one_to_many_normalizer_scale,
            log_route_stats=log_route_stats,
        )
        if not 0.0 <= align_alpha <= 1.0 or rank_tau <= 0 or min_quality < 0:
            raise ValueError(
                "AlignCriterion: align_alpha must lie in [0, 1], rank_tau be > 0 and min_quality "
                f">= 0, got {align_alpha}, {rank_tau}, {min_quality}"
            )
        self.align_alpha = align_alpha
        self.align_gamma = align_gamma
        self.rank_tau = rank_tau
        self.min_quality = min_quality

    def class_loss(
        self,
        logits: Tensor,
        boxes: Tensor,
        targets: Targets,
        indices: list[MatchIndices],
        normalizer: float,
        *,
        one_to_many: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """IA-BCE class loss; on one-to-many matches also the per-pair rank weights for GIoU.

        Args:
            logits: [B, Q, C] float32 logits.
            boxes: [B, Q, 4] float32 predicted boxes (normalised cxcywh).
            targets: B target dicts.
            indices: B pairs ``(query_idx, gt_idx)``.
            normalizer: divides the loss.
            one_to_many: rank the matched queries of each GT (group / sep routes).

        Returns:
            The scalar loss and, when ``one_to_many``, [M] rank weights (pairs in ``indices`` order,
            images first); otherwise None.
        """
        batch_idx, query_idx = self._query_index(indices)
        gt_idx = torch.cat([j for _, j in indices])
        classes = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)])
        with torch.no_grad():
            target_boxes = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)])
            iou = paired_box_iou(
                box_cxcywh_to_xyxy(boxes[batch_idx, query_idx]), box_cxcywh_to_xyxy(target_boxes)
            )
            score_term = torch.exp(
                self.align_alpha * F.logsigmoid(logits[batch_idx, query_idx, classes])
            )
            soft = score_term * iou.clamp(min=0) ** (1 - self.align_alpha)
            soft = soft.clamp(min=self.min_quality)
            weights = None
            if one_to_many:
                max_gt = max((len(t["labels"]) for t in targets), default=0) + 1
                weights = rank_weights(soft, batch_idx * max_gt + gt_idx, self.rank_tau)
                soft = soft * weights
        loss = ia_bce_loss(
            logits, (batch_idx, query_idx, classes), soft, normalizer, gamma=self.align_gamma
        )
        return loss, weights
