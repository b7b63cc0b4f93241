"""One-to-one Hungarian matching between predictions and ground truth."""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from mrdetr.structures import box_cxcywh_to_xyxy, generalized_box_iou

from .utils import MatchIndices, NonFiniteOutputError, Targets, check_targets, empty_match

__all__ = ["HungarianMatcher"]


class HungarianMatcher(nn.Module):
    """Minimum-cost one-to-one assignment of queries to ground-truth boxes.

    The pairwise cost between query q and ground truth g is::

        cost_bbox * L1(box_q, box_g) + cost_class * focal(q, class_g) + cost_giou * (-GIoU(box_q, box_g))

    with L1 on normalised (cx, cy, w, h), GIoU on (x1, y1, x2, y2), and the focal class cost
    ``alpha (1-p)^gamma (-log(p + eps)) - (1-alpha) p^gamma (-log(1 - p + eps))`` at the GT class,
    ``p = sigmoid(logit)``. Each image is solved with ``scipy.optimize.linear_sum_assignment`` on the CPU.

    Args:
        cost_class: weight of the focal class cost; 0 disables it (the Deformable variant's encoder
            matcher, which matches the GT against the anchors).
        cost_bbox: weight of the L1 box cost.
        cost_giou: weight of the negative-GIoU cost.
        alpha: focal alpha of the class cost.
        gamma: focal gamma of the class cost.
        eps: added inside the logarithms of the class cost.
    """

    def __init__(
        self,
        *,
        cost_class: float = 2.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        alpha: float = 0.25,
        gamma: float = 2.0,
        eps: float = 1e-8,
    ):
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError(
                "HungarianMatcher: cost_class, cost_bbox and cost_giou cannot all be 0"
            )
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.alpha = alpha
        self.gamma = gamma
        self.eps = eps

    def extra_repr(self) -> str:
        return (
            f"cost_class={self.cost_class}, cost_bbox={self.cost_bbox}, cost_giou={self.cost_giou}, "
            f"alpha={self.alpha}, gamma={self.gamma}"
        )

    def class_cost(self, prob: Tensor) -> Tensor:
        """Focal class cost from probabilities already gathered at the GT classes.

        Args:
            prob: [M, n] sigmoid probabilities of each query at each GT's class.

        Returns:
            [M, n] cost (lower is better).
        """
        neg = (1 - self.alpha) * (prob**self.gamma) * (-(1 - prob + self.eps).log())
        pos = self.alpha * ((1 - prob) ** self.gamma) * (-(prob + self.eps).log())
        return pos - neg

    @torch.no_grad()
    def forward(self, logits: Tensor, boxes: Tensor, targets: Targets) -> list[MatchIndices]:
        """Match every image of the batch.

        Args:
            logits: [B, Q, C] class logits (ignored when ``cost_class == 0``).
            boxes: [B, Q, 4] normalised (cx, cy, w, h) boxes.
            targets: B dicts with ``"labels"`` int64 [n_b] and ``"boxes"`` [n_b, 4] normalised cxcywh.

        Returns:
            B pairs ``(query_idx, gt_idx)``, int64 [k_b] each with k_b = min(Q, n_b), on the device of
            ``boxes``; the query indices are sorted ascending.
        """
        check_targets(targets, boxes, "HungarianMatcher")
        device = boxes.device
        bs, num_queries = boxes.shape[:2]
        sizes = [len(t["boxes"]) for t in targets]
        if sum(sizes) == 0:
            return [empty_match(device) for _ in range(bs)]

        with torch.autocast(device_type=device.type, enabled=False):
            out_bbox = boxes.flatten(0, 1).float()
            tgt_ids = torch.cat([t["labels"] for t in targets]).to(device)
            tgt_bbox = torch.cat([t["boxes"] for t in targets]).to(
                device=device, dtype=torch.float32
            )

            cost = self.cost_bbox * torch.cdist(out_bbox, tgt_bbox, p=1)
            if self.cost_class != 0:
                prob = logits.flatten(0, 1).float().sigmoid()[:, tgt_ids]
                cost = cost + self.cost_class * self.class_cost(prob)
            giou = generalized_box_iou(box_cxcywh_to_xyxy(out_bbox), box_cxcywh_to_xyxy(tgt_bbox))
            cost = cost + self.cost_giou * -giou
            cost = cost.view(bs, num_queries, -1).cpu()
        if not bool(torch.isfinite(cost).all()):  # linear_sum_assignment would reject it
            raise NonFiniteOutputError(
                f"HungarianMatcher: the cost matrix {list(cost.shape)} holds "
                f"{int(torch.isnan(cost).sum())} NaN and {int(torch.isinf(cost).sum())} inf "
                "values (non-finite predicted logits or boxes)"
            )

        indices = []
        for i, c in enumerate(cost.split(sizes, dim=-1)):
            if sizes[i] == 0:
                indices.append(empty_match(device))
                continue
            rows, cols = linear_sum_assignment(c[i].numpy())
            indices.append(
                (
                    torch.as_tensor(rows, dtype=torch.int64, device=device),
                    torch.as_tensor(cols, dtype=torch.int64, device=device),
                )
            )
        return indices
