"""Drawing of the synthetic shapes dataset: classes, polygons, backgrounds, placement."""

from __future__ import annotations

import colorsys
import math
from typing import Any

import cv2
import numpy as np
import pycocotools.mask as mask_util

from .detection_utils import decode_rle

__all__ = ["COLOUR_HUES", "SHAPES", "ShapeSampler", "class_specs", "unit_polygon"]

SHAPES = ("rectangle", "ellipse", "triangle", "diamond", "hexagon", "cross")
# Colour families: name -> hue in [0, 1).
COLOUR_HUES = {
    "red": 0.0,
    "orange": 0.08,
    "yellow": 0.16,
    "green": 0.33,
    "cyan": 0.5,
    "blue": 0.63,
    "purple": 0.75,
    "pink": 0.88,
}
_ELLIPSE_POINTS = 32
_CROSS_HALF_WIDTH = 1.0 / 3.0
_COORD_DECIMALS = 2
_STRIPE_AMPLITUDE = 12.0


def class_specs(num_classes: int) -> list[tuple[str, str]]:
    """(shape, colour) of each class; the first ``len(SHAPES)`` classes differ in both.

    Class k has shape ``k % S`` and colour ``(k + k // S) % C``: unique pairs for k < S * C because
    S + 1 and C are coprime.
    """
    colours = list(COLOUR_HUES)
    num_shapes, num_colours = len(SHAPES), len(colours)
    if not 1 <= num_classes <= num_shapes * num_colours:
        raise ValueError(
            f"num_classes must be in [1, {num_shapes * num_colours}], got {num_classes}"
        )
    return [
        (SHAPES[k % num_shapes], colours[(k + k // num_shapes) % num_colours])
        for k in range(num_classes)
    ]


def unit_polygon(shape: str) -> np.ndarray:
    """Vertices [P, 2] (x, y) of ``shape`` whose bounding box is exactly [-1, 1] x [-1, 1]."""
    if shape == "rectangle":
        pts = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
    elif shape == "ellipse":
        t = np.linspace(0, 2 * math.pi, _ELLIPSE_POINTS, endpoint=False)
        return np.stack([np.cos(t), np.sin(t)], axis=1)
    elif shape == "triangle":
        pts = [(0, -1), (1, 1), (-1, 1)]
    elif shape == "diamond":
        pts = [(0, -1), (1, 0), (0, 1), (-1, 0)]
    elif shape == "hexagon":
        t = np.arange(6) * math.pi / 3
        return np.stack([np.cos(t), np.sin(t) / math.sin(math.pi / 3)], axis=1)
    elif shape == "cross":
        a = _CROSS_HALF_WIDTH
        pts = [(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a),
               (-1, a), (-1, -a), (-a, -a)]  # fmt: skip
    else:
        raise ValueError(f"Unknown shape '{shape}' (known: {SHAPES})")
    return np.asarray(pts, dtype=np.float64)


class ShapeSampler:
    """Draws one synthetic image and its annotations from a numpy ``Generator``.

    Args:
        image_size: longer image side; the shorter side is ``image_size * U(min_aspect, 1)``.
        specs: (shape, colour) per class; category id of class k is ``2k + 1``.
        min_aspect: smallest shorter/longer side ratio.
        max_objects: objects per non-empty image are uniform in [1, max_objects].
        min_object_frac: smallest object size, as a fraction of the shorter side.
        max_object_frac: largest object size, as a fraction of the shorter side.
        min_object_px: absolute lower bound on the object size.
        min_visible: every object keeps at least this fraction of its pixels visible.
        max_attempts: placement attempts per object before giving up on it.
        texture_std: std of the per-pixel noise (background and objects).
    """

    def __init__(
        self,
        *,
        image_size: int,
        specs: list[tuple[str, str]],
        min_aspect: float = 0.625,
        max_objects: int = 6,
        min_object_frac: float = 0.08,
        max_object_frac: float = 0.7,
        min_object_px: float = 6.0,
        min_visible: float = 0.7,
        max_attempts: int = 20,
        texture_std: float = 10.0,
    ):
        if image_size < 4 * min_object_px:
            raise ValueError(f"image_size must be >= {4 * min_object_px}, got {image_size}")
        self.image_size = image_size
        self.specs = specs
        self.min_aspect = min_aspect
        self.max_objects = max_objects
        self.min_object_frac = min_object_frac
        self.max_object_frac = max_object_frac
        self.min_object_px = min_object_px
        self.min_visible = min_visible
        self.max_attempts = max_attempts
        self.texture_std = texture_std
        self._polygons = {shape: unit_polygon(shape) for shape in SHAPES}

    @property
    def categories(self) -> list[dict[str, Any]]:
        return [
            {"id": 2 * k + 1, "name": f"{colour}_{shape}", "supercategory": shape}
            for k, (shape, colour) in enumerate(self.specs)
        ]

    def _image_shape(self, rng: np.random.Generator) -> tuple[int, int]:
        short = int(round(self.image_size * rng.uniform(self.min_aspect, 1.0)))
        return (self.image_size, short) if rng.random() < 0.5 else (short, self.image_size)

    def _background(self, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
        grid = int(rng.integers(2, 9))
        grey = rng.uniform(50, 190, (grid, grid, 1))
        tint = rng.uniform(-20, 20, (1, 1, 3))
        coarse = cv2.resize((grey + tint).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
        freq, phase, angle = (
            rng.uniform(0.05, 0.4),
            rng.uniform(0, 2 * math.pi),
            rng.uniform(0, math.pi),
        )
        # sin(u + v) = sin(u)cos(v) + cos(u)sin(v): separable stripes, u along x and v along y.
        u = (freq * math.cos(angle) * np.arange(w, dtype=np.float32))[None, :]
        v = (freq * math.sin(angle) * np.arange(h, dtype=np.float32) + phase)[:, None]
        stripes = _STRIPE_AMPLITUDE * (np.sin(u) * np.cos(v) + np.cos(u) * np.sin(v))
        noise = self._noise(rng, (h, w, 3))
        noise += coarse
        noise += stripes[..., None]
        return noise

    def _noise(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        """Uniform noise with std ``texture_std`` (uniform is much cheaper to draw than normal)."""
        half_width = np.float32(self.texture_std * math.sqrt(3.0))
        noise = rng.random(shape, dtype=np.float32)
        noise -= np.float32(0.5)
        noise *= 2 * half_width
        return noise

    def _colour(self, rng: np.random.Generator, colour: str) -> np.ndarray:
        hue = (COLOUR_HUES[colour] + rng.uniform(-0.02, 0.02)) % 1.0
        rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0.75, 1.0), rng.uniform(0.8, 1.0))
        return np.asarray(rgb) * 255.0

    def _polygon(self, rng: np.random.Generator, shape: str, h: int, w: int) -> np.ndarray:
        short = min(h, w)
        low = max(self.min_object_frac * short, self.min_object_px)
        size = math.exp(rng.uniform(math.log(low), math.log(self.max_object_frac * short)))
        aspect = math.exp(rng.uniform(-0.35, 0.35))
        half_w = min(size * math.sqrt(aspect), w - 1) / 2
        half_h = min(size / math.sqrt(aspect), h - 1) / 2
        cx, cy = rng.uniform(half_w, w - half_w), rng.uniform(half_h, h - half_h)
        pts = self._polygons[shape] * (half_w, half_h) + (cx, cy)
        return np.round(pts, _COORD_DECIMALS)

    def sample_image(
        self, rng: np.random.Generator, *, empty: bool = False
    ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Draw an image and its objects.

        Returns:
            uint8 RGB image [H, W, 3] and a list of objects with ``category_id`` (dataset id),
            ``bbox`` [x, y, w, h], ``area`` (mask pixels) and ``polygon`` (flat list).
        """
        h, w = self._image_shape(rng)
        image = self._background(rng, h, w)
        num = 0 if empty else int(rng.integers(1, self.max_objects + 1))
        placed: list[dict[str, Any]] = []
        for _ in range(num):
            k = int(rng.integers(len(self.specs)))
            shape, colour = self.specs[k]
            for _attempt in range(self.max_attempts):
                pts = self._polygon(rng, shape, h, w)
                flat = pts.reshape(-1).tolist()
                mask = decode_rle(mask_util.frPyObjects([flat], h, w))[..., 0]
                full = int(mask.sum())
                if full == 0:
                    continue
                if all(
                    (p["visible"] & ~mask).sum() >= self.min_visible * p["area"] for p in placed
                ):
                    break
            else:
                continue  # no acceptable placement for this object
            for p in placed:
                p["visible"] &= ~mask
            x0, y0 = pts.min(axis=0)
            x1, y1 = pts.max(axis=0)
            bbox = [round(float(v), _COORD_DECIMALS) for v in (x0, y0, x1 - x0, y1 - y0)]
            placed.append(
                {
                    "category_id": 2 * k + 1,
                    "bbox": bbox,
                    "area": full,
                    "polygon": flat,
                    "visible": mask.copy(),
                }
            )
            base = self._colour(rng, colour)
            image[mask] = base.astype(np.float32) + self._noise(rng, (full, 3))
        objects = [{k: v for k, v in p.items() if k != "visible"} for p in placed]
        return np.clip(image, 0, 255).astype(np.uint8), objects
