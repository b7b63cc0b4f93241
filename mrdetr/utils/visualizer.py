"""A small detection visualizer on OpenCV: boxes, class names, scores, translucent masks and
panoptic segmentations.

All functions take and return RGB ``uint8`` arrays [H, W, 3] (convert with ``[:, :, ::-1]`` for
OpenCV's BGR windows and writers).

Example::

    from mrdetr.utils.visualizer import draw_detections
    vis = draw_detections(image_rgb, predictor(image_rgb))
    ids, segments = outputs["panoptic_seg"]
    vis = draw_panoptic(image_rgb, ids, segments, metadata.stuff_classes)
"""

from __future__ import annotations

import colorsys
import os
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from .file_io import atomic_write_bytes

__all__ = [
    "class_color",
    "draw_detections",
    "draw_instances",
    "draw_panoptic",
    "save_image",
    "side_by_side",
    "text_color",
]

_GOLDEN_RATIO = 0.618033988749895  # hue step between consecutive class ids (well-spread colours)
_SATURATION = 0.75
_VALUE = 0.95
_MASK_ALPHA = 0.45
_PANOPTIC_ALPHA = 0.5
_DEFAULT_IMAGE_EXTENSION = ".jpg"
_INSTANCE_HUE_STEP = 0.035  # hue shift between thing instances of one class (in [0, 1) hue units)
_MIN_LABEL_RADIUS = 2.0  # a segment gets a label when it holds a disc of this radius (pixels)
_LINE_WIDTH_FRACTION = 1 / 400  # box line width relative to the longer image side
_FONT_FRACTION = 1 / 1000  # font scale relative to the longer image side
_MIN_FONT_SCALE = 0.35
_LIGHT_TEXT = (255, 255, 255)
_DARK_TEXT = (0, 0, 0)
# Brightness of a colour: the luma of W3C's AERT formula, (299 R + 587 G + 114 B) / 1000 on the
# gamma-encoded 0-255 values. Fills brighter than the threshold (yellows, greens, cyans, oranges) get
# black text, the others white. The threshold sits above mid-grey (127.5) because white reads better
# on saturated mid-tones (reds, blues, magentas) than black does.
_LUMA_WEIGHTS = (0.299, 0.587, 0.114)
_DARK_TEXT_LUMA = 140.0
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def class_color(class_id: int) -> tuple[int, int, int]:
    """A deterministic, bright RGB colour for a class id."""
    hue = (int(class_id) * _GOLDEN_RATIO) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, _SATURATION, _VALUE)
    return int(r * 255), int(g * 255), int(b * 255)


def _luma(color: Sequence[int]) -> float:
    """Brightness in [0, 255] of an RGB ``uint8`` colour (AERT luma of the gamma-encoded values)."""
    return sum(w * float(c) for w, c in zip(_LUMA_WEIGHTS, color))


def text_color(background: Sequence[int]) -> tuple[int, int, int]:
    """The text colour for a label on ``background`` (RGB): black on light, white on dark fills."""
    if _luma(background) > _DARK_TEXT_LUMA:
        return _DARK_TEXT
    return _LIGHT_TEXT


def _draw_label(
    out: np.ndarray, text: str, x: int, bottom: int, color: tuple[int, int, int], scale: float
) -> None:
    """Draw ``text`` on a filled box of ``color`` whose lower-left corner is near ``(x, bottom)``.

    The box is shifted so that it lies inside the image (when the text is wider or taller than
    the image, it starts at its left/top edge); the text colour contrasts with ``color``.
    """
    h, w = out.shape[:2]
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, 1)
    x0 = int(np.clip(x, 0, max(w - 1 - tw, 0)))
    y1 = int(np.clip(bottom, min(th + base, h - 1), h - 1))
    cv2.rectangle(out, (x0, y1 - th - base), (x0 + tw, y1), color, -1)
    cv2.putText(out, text, (x0, y1 - base), _FONT, scale, text_color(color), 1, cv2.LINE_AA)


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
        (_, th), base = cv2.getTextSize(text, _FONT, font_scale, 1)
        # above the box's top-left corner; below it where the box touches the top edge
        ty = y1 - 2 if y1 - th - base - 2 >= 0 else y1 + th + base + 2
        _draw_label(out, text, x1, ty, color, font_scale)
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


def _instance_color(class_id: int, index: int, hue_step: float) -> tuple[int, int, int]:
    """The class colour, its hue shifted by ``+-hue_step * ceil(index / 2)`` (index 0: unchanged)."""
    if index == 0:
        return class_color(class_id)
    r, g, b = (c / 255 for c in class_color(class_id))
    hue, sat, val = colorsys.rgb_to_hsv(r, g, b)
    sign = 1 if index % 2 else -1
    hue = (hue + sign * hue_step * ((index + 1) // 2)) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return int(r * 255), int(g * 255), int(b * 255)


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` (bool [H, W]) with a 4-neighbour outside it (the image border is not)."""
    eroded = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=1)
    return mask & ~eroded.astype(bool)


def draw_panoptic(
    image: np.ndarray,
    ids: Any,
    segments: Sequence[dict[str, Any]],
    class_names: Sequence[str] | None = None,
    *,
    alpha: float = _PANOPTIC_ALPHA,
    instance_hue_step: float = _INSTANCE_HUE_STEP,
    min_label_radius: float = _MIN_LABEL_RADIUS,
) -> np.ndarray:
    """Draw a panoptic segmentation on a copy of ``image``.

    Every segment gets a translucent fill of its class colour (:func:`class_color`) and a 1-pixel
    contour inside its border, so that touching segments stay apart; thing instances of one
    class also get slightly different hues. The label (class name, and the score when given) is
    centred on the segment's most interior pixel (the maximum of its distance transform) when the
    segment holds a disc of radius ``min_label_radius`` there. Void pixels (id 0) and pixels of
    ids without an entry in ``segments`` are left unchanged (except under a label).

    Args:
        image: RGB uint8 [H, W, 3].
        ids: segment id per pixel, int [H, W] (numpy array or tensor); 0 = void.
        segments: ``{"id", "category_id" (contiguous), optional "isthing", optional "score"}``
            per segment; entries whose id does not occur in ``ids`` are skipped.
        class_names: names indexed by contiguous class id (ids are printed when absent).
        alpha: opacity of the fill.
        instance_hue_step: hue shift (fraction of the hue circle) between the thing instances
            of one class.
        min_label_radius: smallest inscribed radius (pixels) of a segment that gets a label.

    Returns:
        RGB uint8 [H, W, 3] with the drawing.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"draw_panoptic: image must be [H, W, 3], got shape {image.shape}")
    ids_np = _as_numpy(ids)
    if ids_np.shape != image.shape[:2]:
        raise ValueError(
            f"draw_panoptic: ids must be [H, W] = {tuple(image.shape[:2])} like the image, "
            f"got shape {ids_np.shape}"
        )
    out = np.ascontiguousarray(image, dtype=np.uint8).copy()
    h, w = out.shape[:2]
    font_scale = max(_MIN_FONT_SCALE, max(h, w) * _FONT_FRACTION)
    instances_seen: dict[int, int] = {}
    labels = []
    for seg in segments:
        mask = ids_np == int(seg["id"])
        if not mask.any():
            continue
        cls = int(seg["category_id"])
        index = 0
        if seg.get("isthing", True):
            index = instances_seen.get(cls, 0)
            instances_seen[cls] = index + 1
        color = np.asarray(_instance_color(cls, index, instance_hue_step), dtype=np.float32)
        out[mask] = np.round(alpha * color + (1 - alpha) * out[mask]).clip(0, 255).astype(np.uint8)
        out[_boundary(mask)] = color.astype(np.uint8)
        dist = cv2.distanceTransform(
            np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE
        )[1:-1, 1:-1]
        if dist.max() >= min_label_radius:
            cy, cx = np.unravel_index(int(np.argmax(dist)), dist.shape)
            score = seg.get("score")
            text = _label(cls, None if score is None else float(score), class_names)
            labels.append((text, int(cx), int(cy), tuple(int(c) for c in color)))
    for text, cx, cy, color in labels:  # after all fills, so no fill covers a label
        (tw, th), base = cv2.getTextSize(text, _FONT, font_scale, 1)
        _draw_label(out, text, cx - tw // 2, cy + (th + base) // 2, color, font_scale)
    return out


def side_by_side(left: np.ndarray, right: np.ndarray, gap: int = 4) -> np.ndarray:
    """Concatenate two RGB images horizontally (the shorter one is padded with black)."""
    h = max(left.shape[0], right.shape[0])

    def pad(img: np.ndarray) -> np.ndarray:
        return np.pad(img, ((0, h - img.shape[0]), (0, 0), (0, 0)))

    spacer = np.zeros((h, gap, 3), dtype=np.uint8)
    return np.concatenate([pad(left), spacer, pad(right)], axis=1)


def save_image(path: str, image: np.ndarray) -> None:
    """Write an RGB ``uint8`` image [H, W, 3] atomically, encoded by ``path``'s extension.

    A path without an extension is written as JPEG.

    Raises:
        ValueError: OpenCV cannot encode that format.
    """
    ext = os.path.splitext(path)[1] or _DEFAULT_IMAGE_EXTENSION
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(image[:, :, ::-1]))
    if not ok:
        raise ValueError(f"cannot encode an image as '{ext}' for {path}")
    atomic_write_bytes(path, buf.tobytes())
