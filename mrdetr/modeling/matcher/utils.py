"""Types and input checks shared by the matchers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor

__all__ = [
    "MatchIndices",
    "NonFiniteOutputError",
    "Targets",
    "check_finite_predictions",
    "check_targets",
    "empty_match",
]

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


class NonFiniteOutputError(FloatingPointError):
    """A model output that is about to be matched holds NaN or inf (the training diverged).

    A ``FloatingPointError``, so the trainer applies its ``nan_policy`` to it as to a
    non-finite loss.
    """


def check_finite_predictions(named: Iterable[tuple[str, Tensor]]) -> None:
    """Raise :class:`NonFiniteOutputError` naming every non-finite output, before any matching.

    One device synchronisation for all tensors; the names are only built on failure.

    Args:
        named: ``(name, tensor)`` pairs, e.g. ``("PRIMARY route, decoder layer 5: boxes", t)``.
    """
    items = [(name, t) for name, t in named if t.numel() > 0]
    if not items:
        return
    flags = torch.stack([torch.isfinite(t.detach()).all() for _, t in items])
    if bool(flags.all()):
        return
    bad = []
    for (name, t), ok in zip(items, flags.tolist()):
        if not ok:
            t = t.detach()
            bad.append(
                f"{name} {list(t.shape)} has {int(torch.isnan(t).sum())} NaN and "
                f"{int(torch.isinf(t).sum())} inf values"
            )
    raise NonFiniteOutputError(
        f"non-finite model outputs before matching ({len(bad)} of {len(items)} tensors): "
        + "; ".join(bad[:4])
        + (f"; ... ({len(bad) - 4} more)" if len(bad) > 4 else "")
    )
