"""A small detection visualizer on OpenCV: boxes, class names, scores and translucent masks.

All functions take and return RGB ``uint8`` arrays [H, W, 3] (convert with ``[:, :, ::-1]`` for
OpenCV's BGR windows and writers).

Example::

    from mrdetr.utils.visualizer import draw_detections
    vis = draw_detections(image_rgb, predictor(image_rgb))
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

__all__ = ["class_color", "draw_detections", "draw_instances", "side_by_side"]

_GOLDEN_RATIO = 0.618033988749895  # hue step between consecutive class ids (well-spread colours)
_SATURATION = 0.75
_VALUE = 0.95
_MASK_ALPHA = 0.45
_LINE_WIDTH_FRACTION = 1 / 400  # box line width relative to the longer image side
_FONT_FRACTION = 1 / 1000  # font scale relative to the longer image side
_MIN_FONT_SCALE = 0.35
_TEXT_COLOR = (255, 255, 255)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def class_color(class_id: int) -> tuple[int, int, int]:
    """A deterministic, bright RGB colour for a class id."""
    hue = (int(class_id) * _GOLDEN_RATIO) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, _SATURATION, _VALUE)
    return int(r * 255), int(g * 255), int(b * 255)


def _as_numpy(x: Any) -> np.ndarray | None:
    if x is None:
        return None
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _label(cls: int, score: float | None, class_names: Sequence[str] | None) -> str:
    name = class_names[cls] if class_names is not None and 0 <= cls < len(class_names) else str(cls)
    return name if score is None else f"{name} {score * 100:.0f}%"


def draw_instances(
    image: np.ndarray,
    boxes: Any,
    classes: Any,
    scores: Any = None,
    masks: Any = None,
    class_names: Sequence[str] | None = None,
    *,
    mask_alpha: float = _MASK_ALPHA,
    line_width: int | None = None,
) -> np.ndarray:
    """Draw instances on a copy of ``image``.

    Args:
        image: RGB uint8 [H, W, 3].
        boxes: [N, 4] xyxy pixel boxes (tensor or array).
        classes: [N] contiguous class ids.
        scores: [N] confidences, or None (ground truth).
        masks: [N, H, W] bool/0-1 masks, or None.
        class_names: names indexed by class id (ids are printed when absent).
        mask_alpha: opacity of the mask fill.
        line_width: box line width in pixels (default: scales with the image).

    Returns:
        RGB uint8 [H, W, 3] with the drawing.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"draw_instances: image must be [H, W, 3], got shape {image.shape}")
    out = np.ascontiguousarray(image, dtype=np.uint8).copy()
    h, w = out.shape[:2]
    boxes_np = _as_numpy(boxes).reshape(-1, 4)
    classes_np = _as_numpy(classes).reshape(-1).astype(np.int64)
    scores_np = _as_numpy(scores)
    masks_np = _as_numpy(masks)
    thickness = line_width or max(1, round(max(h, w) * _LINE_WIDTH_FRACTION))
    font_scale = max(_MIN_FONT_SCALE, max(h, w) * _FONT_FRACTION)
    if masks_np is not None and len(masks_np):
        overlay = out.copy()
        for cls, mask in zip(classes_np, masks_np.astype(bool)):
            overlay[mask] = class_color(cls)
        out = cv2.addWeighted(overlay, mask_alpha, out, 1 - mask_alpha, 0)
    for i, (box, cls) in enumerate(zip(boxes_np, classes_np)):
        color = class_color(cls)
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
        text = _label(int(cls), None if scores_np is None else float(scores_np[i]), class_names)
        (tw, th), base = cv2.getTextSize(text, _FONT, font_scale, 1)
        ty = y1 - 2 if y1 - th - base - 2 >= 0 else min(h - 1, y1 + th + base + 2)
        cv2.rectangle(out, (x1, ty - th - base), (x1 + tw, ty), color, -1)
        cv2.putText(out, text, (x1, ty - base), _FONT, font_scale, _TEXT_COLOR, 1, cv2.LINE_AA)
    return out


def draw_detections(
    image: np.ndarray, detections: Any, class_names: Sequence[str] | None = None
) -> np.ndarray:
    """Draw a :class:`mrdetr.engine.predictor.Detections` (names from the detections if present)."""
    names = class_names
    boxes, classes, scores = detections.boxes, detections.classes, detections.scores
    if names is None and detections.class_names is not None:
        # the detections carry one name per instance; map ids to those names
        names_by_id = dict(zip(_as_numpy(classes).tolist(), detections.class_names))
        max_id = max(names_by_id, default=-1)
        names = [names_by_id.get(i, str(i)) for i in range(max_id + 1)]
    return draw_instances(image, boxes, classes, scores, detections.masks, names)


def side_by_side(left: np.ndarray, right: np.ndarray, gap: int = 4) -> np.ndarray:
    """Concatenate two RGB images horizontally (the shorter one is padded with black)."""
    h = max(left.shape[0], right.shape[0])

    def pad(img: np.ndarray) -> np.ndarray:
        return np.pad(img, ((0, h - img.shape[0]), (0, 0), (0, 0)))

    spacer = np.zeros((h, gap, 3), dtype=np.uint8)
    return np.concatenate([pad(left), spacer, pad(right)], axis=1)
