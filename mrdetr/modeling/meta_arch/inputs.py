"""Validation of batched inputs and conversion of annotations to criterion targets."""

from __future__ import annotations

import logging
import math

import torch
from torch import Tensor
from torch.nn import functional as F

from ...structures import Boxes, Instances, box_xyxy_to_cxcywh
from ...utils.tracing import sizes_tensor

logger = logging.getLogger(__name__)


def validate_inputs(batched_inputs: list[dict], *, require_instances: bool) -> None:
    """Check the model's input format and raise one clear error naming the offending entry.

    Args:
        batched_inputs: ``[{"image": [3, H, W] RGB 0..255, "height", "width", "instances"}]``.
        require_instances: whether ``"instances"`` (training targets) must be present.
    """
    if not isinstance(batched_inputs, (list, tuple)) or len(batched_inputs) == 0:
        raise ValueError("MrDETR expects a non-empty list of dicts with an 'image' entry")
    for i, item in enumerate(batched_inputs):
        if not isinstance(item, dict) or "image" not in item:
            raise KeyError(f"batched_inputs[{i}] has no 'image' key (expected a [3, H, W] tensor)")
        image = item["image"]
        if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
            shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise ValueError(
                f"batched_inputs[{i}]['image'] must be a [3, H, W] RGB tensor, got {shape}"
            )
        if require_instances and "instances" not in item:
            raise KeyError(
                f"batched_inputs[{i}] has no 'instances' key: training needs "
                "Instances(image_size, gt_boxes=Boxes, gt_classes=Tensor)"
            )


def prepare_targets(batched_inputs: list[dict], device: torch.device) -> list[dict[str, Tensor]]:
    """Turn each image's ``Instances`` (xyxy absolute boxes) into ``{"labels", "boxes"}`` with boxes
    normalised cxcywh of the unpadded image.

    Boxes partly outside the image are clipped to it; boxes that are empty after clipping are dropped
    with a warning; non-finite or inverted boxes raise.
    """
    targets = []
    for i, item in enumerate(batched_inputs):
        inst: Instances = item["instances"]
        h, w = int(item["image"].shape[-2]), int(item["image"].shape[-1])
        boxes = inst.gt_boxes.tensor.to(device, torch.float32)
        labels = inst.gt_classes.to(device, torch.long)
        if boxes.numel() and (
            not torch.isfinite(boxes).all() or (boxes[:, 2:] < boxes[:, :2]).any()
        ):
            raise ValueError(
                f"batched_inputs[{i}]: gt_boxes must be finite xyxy with x2 >= x1 and y2 >= y1, "
                f"got {boxes.tolist()}"
            )
        clipped = Boxes(boxes.clone())
        clipped.clip((h, w))
        keep = clipped.nonempty()
        if not bool(keep.all()):
            logger.warning(
                "batched_inputs[%d]: dropped %d gt box(es) lying outside the %dx%d image",
                i,
                int((~keep).sum()),
                h,
                w,
            )
        if labels.numel() and (labels.min() < 0):
            raise ValueError(f"batched_inputs[{i}]: gt_classes must be >= 0, got {labels.tolist()}")
        scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=device)
        targets.append(
            {
                "labels": labels[keep],
                "boxes": box_xyxy_to_cxcywh(clipped.tensor[keep] / scale),
            }
        )
    return targets


def level_padding_masks(
    mask: Tensor,
    image_sizes: list[tuple[int, int]],
    shapes: list[tuple[int, int]],
    mode: str = "interpolate",
) -> list[Tensor]:
    """Padding masks of each feature level.

    Args:
        mask: [B, H, W] pixel padding mask (True = padding).
        image_sizes: (h, w) of each unpadded image.
        shapes: (H_l, W_l) of each feature level.
        mode: ``"interpolate"`` (official): nearest-resize the pixel mask to each level; a coarse
            level can then mark a token valid whose receptive field is almost all padding (e.g. a
            384-wide image padded to 480 gets 7 valid columns at stride 64 instead of 6).
            ``"exact"``: a token is valid iff it exists when the image runs alone, i.e. the first
            ``ceil(h / stride)`` rows and ``ceil(w / stride)`` columns (power-of-two strides); one
            entry in ``image_sizes`` stands for every image of the batch.

    Returns:
        L masks [B, H_l, W_l] bool.
    """
    if mode == "interpolate":
        return [F.interpolate(mask[None].float(), size=s).to(torch.bool)[0] for s in shapes]
    if mode != "exact":
        raise ValueError(f"padding mask mode must be 'interpolate' or 'exact', got {mode!r}")
    pad_h, pad_w = mask.shape[-2:]
    # [B, 2] (h, w); a single row stands for every image of the batch (the exported graph's form)
    sizes = sizes_tensor(list(image_sizes), mask.device)
    out = []
    for h_l, w_l in shapes:
        # strides are constants of the architecture (a traced graph keeps them as such)
        stride_y = 2 ** round(math.log2(pad_h / h_l))
        stride_x = 2 ** round(math.log2(pad_w / w_l))
        valid_rows = torch.div(sizes[:, 0] + stride_y - 1, stride_y, rounding_mode="floor")
        valid_cols = torch.div(sizes[:, 1] + stride_x - 1, stride_x, rounding_mode="floor")
        rows = torch.arange(h_l, device=mask.device)[None, :, None] >= valid_rows[:, None, None]
        cols = torch.arange(w_l, device=mask.device)[None, None, :] >= valid_cols[:, None, None]
        out.append((rows | cols).expand(mask.shape[0], -1, -1))
    return out
