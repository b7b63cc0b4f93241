"""DETR-style detection augmentation on ``torchvision.transforms.v2``.

Transforms act on a sample dict ``{"image": tv_tensors.Image, "boxes": tv_tensors.BoundingBoxes (XYXY),
"labels": Tensor [N], "masks": tv_tensors.Mask [N, H, W] (optional)}``. Random choices are drawn from
the global torch RNG (like every v2 transform); the data loaders fix it per sample from (seed, position
in the sample stream) so augmentations are reproducible for any number of workers and after a resume.

Official recipe (Deformable-DETR/DINO/Mr. DETR; the original's ``configs/common/data/coco_detr.py``)::

    train: RandomHorizontalFlip(0.5) ->
           p=0.5: ResizeShortestEdge((480, 512, ..., 800), max_size=1333)
           else : ResizeShortestEdge((400, 500, 600)) -> RandomSizeCrop(384, 600)
                  -> ResizeShortestEdge((480, ..., 800), max_size=1333)
    test : ResizeShortestEdge((800,), max_size=1333)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

__all__ = [
    "DETR_CROP_PRE_SIZES",
    "DETR_MIN_SIZES",
    "FilterEmptyBoxes",
    "RandomSizeCrop",
    "ResizeShortestEdge",
    "build_detr_test_transform",
    "build_detr_train_transform",
    "shortest_edge_size",
]

DETR_MIN_SIZES: tuple[int, ...] = tuple(range(480, 801, 32))
DETR_CROP_PRE_SIZES: tuple[int, ...] = (400, 500, 600)


def shortest_edge_size(h: int, w: int, short: int, max_size: int | None) -> tuple[int, int]:
    """Output (height, width) when resizing the shorter side of an (h, w) image to ``short``.

    The longer side is capped at ``max_size`` (the shorter side then shrinks proportionally);
    sizes are rounded half-up, as in detectron2's ``ResizeShortestEdge``.
    """
    scale = short / min(h, w)
    newh, neww = h * scale, w * scale
    if max_size is not None and max(newh, neww) > max_size:
        scale = max_size / max(newh, neww)
        newh, neww = newh * scale, neww * scale
    return int(newh + 0.5), int(neww + 0.5)


def _choice(values: Sequence[int]) -> int:
    return int(values[int(torch.randint(len(values), ()))])


class ResizeShortestEdge(v2.Transform):
    """Resize so the shorter side equals a size chosen uniformly from ``short_edge_lengths``.

    Args:
        short_edge_lengths: candidate shorter-side lengths.
        max_size: cap on the longer side (``None``: no cap).
        interpolation: image interpolation (masks always use nearest).
        antialias: antialias when downscaling images (matches PIL's bilinear).
    """

    def __init__(
        self,
        *,
        short_edge_lengths: Sequence[int],
        max_size: int | None = None,
        interpolation: v2.InterpolationMode = v2.InterpolationMode.BILINEAR,
        antialias: bool = True,
    ):
        super().__init__()
        if len(short_edge_lengths) == 0 or min(short_edge_lengths) <= 0:
            raise ValueError(f"short_edge_lengths must be positive sizes, got {short_edge_lengths}")
        if max_size is not None and max_size < max(short_edge_lengths):
            raise ValueError(f"max_size={max_size} is below the largest short edge")
        self.short_edge_lengths = tuple(int(s) for s in short_edge_lengths)
        self.max_size = max_size
        self.interpolation = interpolation
        self.antialias = antialias

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = v2.query_size(flat_inputs)
        short = _choice(self.short_edge_lengths)
        return {"size": list(shortest_edge_size(h, w, short, self.max_size))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(
            F.resize,
            inpt,
            params["size"],
            interpolation=self.interpolation,
            antialias=self.antialias,
        )


class RandomSizeCrop(v2.Transform):
    """Crop a random (h, w) window, h and w each uniform in [min(side, min_size), min(side, max_size)].

    This is detectron2's ``RandomCrop(crop_type="absolute_range")``. Boxes are shifted and clipped
    (boxes that become empty are removed later by :class:`FilterEmptyBoxes`).

    Args:
        min_size: smallest crop side.
        max_size: largest crop side.
    """

    def __init__(self, *, min_size: int, max_size: int):
        super().__init__()
        if not 0 < min_size <= max_size:
            raise ValueError(f"Need 0 < min_size <= max_size, got {min_size}, {max_size}")
        self.min_size = min_size
        self.max_size = max_size

    def _side(self, side: int) -> int:
        low, high = min(side, self.min_size), min(side, self.max_size)
        return int(torch.randint(low, high + 1, ()))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = v2.query_size(flat_inputs)
        ch, cw = self._side(h), self._side(w)
        top = int(torch.randint(h - ch + 1, ()))
        left = int(torch.randint(w - cw + 1, ()))
        return {"top": top, "left": left, "height": ch, "width": cw}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.crop, inpt, **params)


class FilterEmptyBoxes(v2.Transform):
    """Remove boxes whose width or height is not above ``min_size``, with their labels and masks.

    Expects a sample dict with ``boxes`` (``BoundingBoxes``) and filters ``labels`` and ``masks``
    (and any other entry listed in ``keys``) alongside.

    Args:
        min_size: size threshold in pixels (detectron2's ``filter_empty_instances`` uses 1e-5).
        keys: entries filtered together with ``boxes``.
    """

    def __init__(self, *, min_size: float = 1e-5, keys: Sequence[str] = ("labels", "masks")):
        super().__init__()
        self.min_size = min_size
        self.keys = tuple(keys)

    def forward(self, *inputs: Any) -> Any:
        sample = inputs[0] if len(inputs) == 1 else inputs
        if not isinstance(sample, dict) or "boxes" not in sample:
            raise TypeError("FilterEmptyBoxes expects a dict sample with a 'boxes' entry")
        boxes = sample["boxes"]
        xyxy = F.convert_bounding_box_format(boxes, new_format=tv_tensors.BoundingBoxFormat.XYXY)
        keep = ((xyxy[:, 2] - xyxy[:, 0]) > self.min_size) & (
            (xyxy[:, 3] - xyxy[:, 1]) > self.min_size
        )
        out = dict(sample)
        out["boxes"] = tv_tensors.wrap(boxes[keep], like=boxes)
        for key in self.keys:
            value = sample.get(key)
            if value is None:
                continue
            if len(value) != len(keep):
                raise ValueError(
                    f"'{key}' has {len(value)} entries but there are {len(keep)} boxes"
                )
            filtered = value[keep]
            if isinstance(value, tv_tensors.TVTensor):
                filtered = tv_tensors.wrap(filtered, like=value)
            out[key] = filtered
        return out


def _finalize(min_box_size: float) -> list[v2.Transform]:
    return [v2.ClampBoundingBoxes(), FilterEmptyBoxes(min_size=min_box_size)]


def build_detr_train_transform(
    *,
    min_sizes: Sequence[int] = DETR_MIN_SIZES,
    max_size: int = 1333,
    crop_pre_sizes: Sequence[int] = DETR_CROP_PRE_SIZES,
    crop_min_size: int = 384,
    crop_max_size: int = 600,
    flip_prob: float = 0.5,
    crop_prob: float = 0.5,
    min_box_size: float = 1e-5,
) -> v2.Compose:
    """The official DETR training augmentation (flip, then multi-scale resize or resize-crop-resize).

    Swin-L 5-scale uses ``min_sizes=range(480, 1537, 32)``, ``max_size=2400``.

    Args:
        min_sizes: shorter-side choices of the final resize.
        max_size: cap on the longer side of the final resize.
        crop_pre_sizes: shorter-side choices of the resize before the crop (no cap).
        crop_min_size: smallest crop side.
        crop_max_size: largest crop side.
        flip_prob: probability of the horizontal flip.
        crop_prob: probability of the crop branch.
        min_box_size: boxes not wider/taller than this are removed.

    Returns:
        A ``v2.Compose`` acting on a sample dict (see the module docstring).
    """
    resize = ResizeShortestEdge(short_edge_lengths=min_sizes, max_size=max_size)
    crop_branch = v2.Compose(
        [
            ResizeShortestEdge(short_edge_lengths=crop_pre_sizes, max_size=None),
            RandomSizeCrop(min_size=crop_min_size, max_size=crop_max_size),
            ResizeShortestEdge(short_edge_lengths=min_sizes, max_size=max_size),
        ]
    )
    return v2.Compose(
        [
            v2.RandomHorizontalFlip(p=flip_prob),
            v2.RandomChoice([resize, crop_branch], p=[1.0 - crop_prob, crop_prob]),
            *_finalize(min_box_size),
        ]
    )


def build_detr_test_transform(
    *, min_size: int = 800, max_size: int = 1333, min_box_size: float = 1e-5
) -> v2.Compose:
    """The official test-time resize: shorter side ``min_size``, longer side at most ``max_size``.

    Swin-L 5-scale uses ``min_size=1280``, ``max_size=2048``.
    """
    return v2.Compose(
        [
            ResizeShortestEdge(short_edge_lengths=(min_size,), max_size=max_size),
            *_finalize(min_box_size),
        ]
    )
