"""Axis-aligned boxes and box-format helpers."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torchvision.ops import box_area, box_iou, generalized_box_iou

__all__ = [
    "Boxes",
    "box_cxcywh_to_xyxy",
    "box_xyxy_to_cxcywh",
    "box_iou",
    "generalized_box_iou",
    "inverse_sigmoid",
    "paired_box_iou",
    "paired_generalized_box_iou",
]


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """Convert [..., 4] (cx, cy, w, h) boxes to (x1, y1, x2, y2)."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """Convert [..., 4] (x1, y1, x2, y2) boxes to (cx, cy, w, h)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)


def inverse_sigmoid(x: Tensor, eps: float = 1e-3) -> Tensor:
    """Logit with the official clamp: ``log(max(x, eps) / max(1 - x, eps))`` for x clamped to [0, 1]."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def _paired_intersection_union(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """Intersection and union areas [M] of corresponding xyxy boxes [M, 4]."""
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    lt = torch.max(boxes1[:, :2], boxes2[:, :2])
    rb = torch.min(boxes1[:, 2:], boxes2[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    return inter, area1 + area2 - inter


def paired_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of corresponding boxes (the diagonal of ``box_iou``), in O(M).

    Args:
        boxes1: [M, 4] xyxy boxes.
        boxes2: [M, 4] xyxy boxes.

    Returns:
        [M] IoU in [0, 1].
    """
    inter, union = _paired_intersection_union(boxes1, boxes2)
    return inter / union


def paired_generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Generalized IoU of corresponding boxes (the diagonal of ``generalized_box_iou``), in O(M).

    Same arithmetic as the pairwise GIoU (so the same values).

    Args:
        boxes1: [M, 4] xyxy boxes.
        boxes2: [M, 4] xyxy boxes.

    Returns:
        [M] GIoU in [-1, 1].
    """
    inter, union = _paired_intersection_union(boxes1, boxes2)
    iou = inter / union
    lt_enclosing = torch.min(boxes1[:, :2], boxes2[:, :2])
    rb_enclosing = torch.max(boxes1[:, 2:], boxes2[:, 2:])
    wh_enclosing = (rb_enclosing - lt_enclosing).clamp(min=0)
    area = wh_enclosing[:, 0] * wh_enclosing[:, 1]
    return iou - (area - union) / area


class Boxes:
    """A list of N boxes stored as an [N, 4] tensor in absolute (x1, y1, x2, y2).

    Attributes:
        tensor: [N, 4] float tensor.
    """

    def __init__(self, tensor: Tensor):
        if not isinstance(tensor, Tensor):
            tensor = torch.as_tensor(tensor, dtype=torch.float32)
        if tensor.numel() == 0:
            tensor = tensor.reshape(-1, 4).to(dtype=torch.float32)
        if tensor.dim() != 2 or tensor.shape[-1] != 4:
            raise ValueError(f"Boxes expects a [N, 4] tensor, got shape {tuple(tensor.shape)}")
        self.tensor = tensor

    def clone(self) -> Boxes:
        return Boxes(self.tensor.clone())

    def to(self, *args, **kwargs) -> Boxes:
        return Boxes(self.tensor.to(*args, **kwargs))

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def area(self) -> Tensor:
        """[N] areas."""
        return box_area(self.tensor)

    def clip(self, box_size: tuple[int, int]) -> None:
        """Clip in place to an image of size (height, width)."""
        h, w = box_size
        x1 = self.tensor[:, 0].clamp(min=0, max=w)
        y1 = self.tensor[:, 1].clamp(min=0, max=h)
        x2 = self.tensor[:, 2].clamp(min=0, max=w)
        y2 = self.tensor[:, 3].clamp(min=0, max=h)
        self.tensor = torch.stack((x1, y1, x2, y2), dim=-1)

    def nonempty(self, threshold: float = 0.0) -> Tensor:
        """[N] bool: boxes whose width and height both exceed ``threshold``."""
        widths = self.tensor[:, 2] - self.tensor[:, 0]
        heights = self.tensor[:, 3] - self.tensor[:, 1]
        return (widths > threshold) & (heights > threshold)

    def scale(self, scale_x: float, scale_y: float) -> None:
        """Scale in place (x by ``scale_x``, y by ``scale_y``)."""
        self.tensor[:, 0::2] *= scale_x
        self.tensor[:, 1::2] *= scale_y

    def inside_box(self, box_size: tuple[int, int], boundary_threshold: float = 0) -> Tensor:
        """[N] bool: boxes lying inside an image of size (height, width)."""
        h, w = box_size
        t = self.tensor
        return (
            (t[:, 0] >= -boundary_threshold)
            & (t[:, 1] >= -boundary_threshold)
            & (t[:, 2] < w + boundary_threshold)
            & (t[:, 3] < h + boundary_threshold)
        )

    def get_centers(self) -> Tensor:
        """[N, 2] box centres (x, y)."""
        return (self.tensor[:, :2] + self.tensor[:, 2:]) / 2

    def __getitem__(self, item) -> Boxes:
        if isinstance(item, int):
            return Boxes(self.tensor[item].view(1, -1))
        b = self.tensor[item]
        return Boxes(b.reshape(-1, 4))

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def __iter__(self) -> Iterator[Tensor]:
        yield from self.tensor

    def __repr__(self) -> str:
        return f"Boxes({self.tensor})"

    @classmethod
    def cat(cls, boxes_list: list[Boxes]) -> Boxes:
        if len(boxes_list) == 0:
            return cls(torch.empty(0, 4))
        return cls(torch.cat([b.tensor for b in boxes_list], dim=0))
