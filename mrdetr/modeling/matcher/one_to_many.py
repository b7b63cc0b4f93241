"""One-to-many assignment of the auxiliary routes (official ``Stage2Assigner``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mrdetr.structures import box_cxcywh_to_xyxy, box_iou

from .utils import MatchIndices, Targets, check_targets, empty_match

__all__ = ["OneToManyAssigner"]


class OneToManyAssigner(nn.Module):
    """Assign up to ``max_k`` queries to every ground-truth box, by a blended IoU/score quality.

    Per image (under ``no_grad``):

    1. Quality ``A [n_gt, Q] = a * IoU(gt_g, pred_q) + (1 - a) * sigmoid(logit_q)[class_g]``, ``a = iou_weight``
       (plain IoU on xyxy boxes).
    2. Every query takes its best GT ``g*(q) = argmax_g A`` with value ``v(q)`` and is positive when
       ``v(q) >= threshold``. Low-quality rescue: for every GT, its single best query (top-1 of its row)
       becomes positive too, keeping that query's own ``g*`` (which may be another GT).
    3. Random subsampling: at most ``int(num_queries * positive_fraction)`` positives are kept, chosen by
       a random permutation (all of them, independent of the RNG, when there are fewer).
    4. ``c_g`` = number of kept positives with ``g* = g``. Every GT with ``c_g >= 1`` is matched to the
       first ``min(c_g, max_k)`` of the ``min(max_k, Q)`` highest-quality queries of its row (over all
       queries, not only the sampled ones). One query can therefore be matched to two GTs.

    Args:
        num_queries: sampling budget S of the official subsampling; the positive cap is
            ``int(S * positive_fraction)`` regardless of the real number of queries (official: 900 for
            the detection variants, 300 for instance segmentation).
        positive_fraction: fraction of the budget that may be positives.
        max_k: the most queries one GT can be matched to.
        iou_weight: weight a of the IoU in the quality; the class score gets ``1 - a``
            (0.7 Deformable/InsSeg, 0.8 DINO/Align).
        threshold: quality at or above which a query is positive.
        draw_negative_permutation: also draw the (unused) permutation of the negatives, as the official
            subsampling does, so that a seeded run consumes the random stream exactly like the
            official code (needed to reproduce later random draws, e.g. denoising noise).
    """

    def __init__(
        self,
        *,
        num_queries: int = 900,
        positive_fraction: float = 0.25,
        max_k: int = 6,
        iou_weight: float = 0.7,
        threshold: float = 0.4,
        draw_negative_permutation: bool = True,
    ):
        super().__init__()
        if num_queries < 1 or max_k < 1:
            raise ValueError(
                f"OneToManyAssigner: num_queries and max_k must be >= 1, got {num_queries}, {max_k}"
            )
        if not 0.0 <= positive_fraction <= 1.0 or not 0.0 <= iou_weight <= 1.0:
            raise ValueError(
                "OneToManyAssigner: positive_fraction and iou_weight must lie in [0, 1], got "
                f"{positive_fraction}, {iou_weight}"
            )
        self.num_queries = num_queries
        self.positive_fraction = positive_fraction
        self.max_k = max_k
        self.iou_weight = iou_weight
        self.threshold = threshold
        self.draw_negative_permutation = draw_negative_permutation

    @property
    def max_positives(self) -> int:
        """The positive cap of the random subsampling."""
        return int(self.num_queries * self.positive_fraction)

    def extra_repr(self) -> str:
        return (
            f"num_queries={self.num_queries}, positive_fraction={self.positive_fraction}, "
            f"max_k={self.max_k}, iou_weight={self.iou_weight}, threshold={self.threshold}"
        )

    def quality(self, logits: Tensor, boxes: Tensor, labels: Tensor, gt_boxes: Tensor) -> Tensor:
        """Quality matrix of one image.

        Args:
            logits: [Q, C] class logits.
            boxes: [Q, 4] predicted normalised cxcywh boxes.
            labels: [n] GT classes.
            gt_boxes: [n, 4] GT normalised cxcywh boxes.

        Returns:
            [n, Q] float32 quality ``a * IoU + (1 - a) * score``.
        """
        iou = box_iou(box_cxcywh_to_xyxy(gt_boxes.float()), box_cxcywh_to_xyxy(boxes.float()))
        score = logits.float().sigmoid()[:, labels].T
        return self.iou_weight * iou + (1 - self.iou_weight) * score

    def _randperm(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        # Without a generator the official code draws from the global CPU generator.
        gen_device = generator.device if generator is not None else torch.device("cpu")
        perm = torch.randperm(n, generator=generator, device=gen_device)
        return perm.to(device)

    @torch.no_grad()
    def assign(self, quality: Tensor, generator: torch.Generator | None = None) -> MatchIndices:
        """Steps 2-4 on a given quality matrix.

        Args:
            quality: [n_gt, Q] non-negative quality of every (GT, query) pair.
            generator: random generator of the subsampling; None uses the global CPU generator.

        Returns:
            ``(query_idx, gt_idx)``, int64 [k] each, grouped by ascending GT and, within a GT, by
            descending quality.
        """
        n_gt, num_queries = quality.shape
        device = quality.device
        if n_gt == 0:
            positives = torch.empty(0, dtype=torch.int64, device=device)
            best_gt = positives
        else:
            best_val, best_gt = quality.max(dim=0)
            is_positive = best_val >= self.threshold
            is_positive[quality.topk(1, dim=1).indices.flatten()] = True
            positives = is_positive.nonzero().flatten()

        num_pos = positives.numel()
        kept = positives[self._randperm(num_pos, generator, device)[: self.max_positives]]
        if self.draw_negative_permutation:
            self._randperm(num_queries - num_pos, generator, device)
        if kept.numel() == 0:
            return empty_match(device)

        counts = torch.bincount(best_gt[kept], minlength=n_gt)
        gts = counts.nonzero().flatten()
        k = min(self.max_k, num_queries)
        top_queries = quality[gts].topk(k, dim=1).indices
        keep = torch.arange(k, device=device)[None, :] < counts[gts][:, None]
        return top_queries[keep], gts[:, None].expand(-1, k)[keep]

    @torch.no_grad()
    def forward(
        self,
        logits: Tensor,
        boxes: Tensor,
        targets: Targets,
        generator: torch.Generator | None = None,
    ) -> list[MatchIndices]:
        """Assign every image of the batch (images in order, each drawing from ``generator``).

        Args:
            logits: [B, Q, C] class logits.
            boxes: [B, Q, 4] normalised cxcywh boxes.
            targets: B dicts with ``"labels"`` int64 [n_b] and ``"boxes"`` [n_b, 4] normalised cxcywh.
            generator: random generator of the subsampling; None uses the global CPU generator.

        Returns:
            B pairs ``(query_idx, gt_idx)``, int64, on the device of ``boxes``.
        """
        check_targets(targets, boxes, "OneToManyAssigner")
        device = boxes.device
        indices = []
        with torch.autocast(device_type=device.type, enabled=False):
            for b, t in enumerate(targets):
                labels = t["labels"].to(device)
                gt_boxes = t["boxes"].to(device)
                quality = self.quality(logits[b].detach(), boxes[b].detach(), labels, gt_boxes)
                indices.append(self.assign(quality, generator))
        return indices
