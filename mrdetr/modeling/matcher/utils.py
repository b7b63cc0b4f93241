"""Types and input checks shared by the matchers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

__all__ = ["MatchIndices", "Targets", "check_targets", "empty_match"]

# (query_idx int64 [k], gt_idx int64 [k]) of one image.
MatchIndices = tuple[Tensor, Tensor]
# Per image: {"labels": int64 [n], "boxes": float [n, 4] normalised cxcywh}.
Targets = Sequence[Mapping[str, Tensor]]


def empty_match(device: torch.device) -> MatchIndices:
    """An empty ``(query_idx, gt_idx)`` pair on ``device``."""
    empty = torch.empty(0, dtype=torch.int64, device=device)
    return empty, empty.clone()


def check_targets(targets: Targets, boxes: Tensor, owner: str) -> None:
    """Raise a clear error when ``targets`` does not fit predictions ``boxes`` [B, Q, 4].

    Args:
        targets: B dicts with ``"labels"`` [n] and ``"boxes"`` [n, 4].
        boxes: [B, Q, 4] predicted boxes.
        owner: name used in the error messages.
    """
    if boxes.dim() != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"{owner}: boxes must be [B, Q, 4], got shape {tuple(boxes.shape)}")
    if len(targets) != boxes.shape[0]:
        raise ValueError(
            f"{owner}: got {len(targets)} target dicts for a batch of {boxes.shape[0]} images"
        )
    for i, t in enumerate(targets):
        if "labels" not in t or "boxes" not in t:
            raise KeyError(
                f"{owner}: targets[{i}] must have keys 'labels' and 'boxes', got {sorted(t)}"
            )
        labels, gt_boxes = t["labels"], t["boxes"]
        if gt_boxes.dim() != 2 or gt_boxes.shape[-1] != 4:
            raise ValueError(
                f"{owner}: targets[{i}]['boxes'] must be [n, 4] cxcywh, got {tuple(gt_boxes.shape)}"
            )
        if labels.dim() != 1 or labels.shape[0] != gt_boxes.shape[0]:
            raise ValueError(
                f"{owner}: targets[{i}]['labels'] must be [n] with n = {gt_boxes.shape[0]} "
                f"(the number of boxes), got shape {tuple(labels.shape)}"
            )
