"""A small synthetic COCO-panoptic dataset: textured stuff regions with coloured shapes on top.

The background of each image is partitioned into 1-3 large **stuff** regions (a wavy horizontal
line splits it in two; sometimes a vertical block of a third class is added), each stuff class
with its own colour family and texture (``STUFF_SPECS``). **Thing** shapes from
:class:`~mrdetr.data._shapes.ShapeSampler` are painted on top (odd category ids 1, 3, 5, ...; the
stuff ids follow, so the categories sorted by id list the things first). Every pixel of the
panoptic PNG belongs to exactly one segment: a thing's visible pixels (the object painted later
wins) or a stuff region minus the things on it (one merged segment per stuff class). Segments
without visible pixels are not written. Output is deterministic for a given seed.

Usage::

    python -m mrdetr.data.synthetic_panoptic --output datasets/synthetic_panoptic [--if-missing]
        [--num-train 256 --num-val 64 --seed 0 --image-size 256 --num-thing-classes 6
         --num-stuff-classes 3]

Layout: ``DIR/{train,val}/*.jpg``, ``DIR/panoptic_{train,val}/*.png`` and
``DIR/annotations/panoptic_{train,val}.json``, written to a temporary folder renamed into place at
the end (an interrupted run never leaves a half dataset).
"""

from __future__ import annotations

import colorsys
import math
import os
from typing import Any

import cv2
import numpy as np

from . import _dataset_dir as common
from ._shapes import COLOUR_HUES, ShapeSampler, class_specs
from .detection_utils import rasterize_segmentation
from .panoptic import id2rgb

__all__ = [
    "STUFF_SPECS",
    "ensure_synthetic_panoptic_dataset",
    "generate_synthetic_panoptic_dataset",
    "main",
]

SPLITS = common.SPLITS
# Stuff classes: (name, texture, hue, saturation, value); low saturation keeps them apart from the
# saturated thing colours, and each texture is distinct.
STUFF_SPECS: tuple[tuple[str, str, float, float, float], ...] = (
    ("sky", "gradient", 0.58, 0.25, 0.85),
    ("ground", "grain", 0.08, 0.45, 0.45),
    ("wall", "bricks", 0.0, 0.05, 0.6),
    ("water", "ripples", 0.5, 0.4, 0.35),
    ("grass", "streaks", 0.22, 0.45, 0.5),
)
_SEGMENT_ID_STRIDE = 1000  # segment id = category_id * stride + index + 1 (unique per image)
_JPEG_QUALITY = 92
_VERSION = 1
_DESCRIPTION = "mrdetr synthetic panoptic shapes"
_COORD_DECIMALS = 2


def _paths(root: str) -> dict[str, str]:
    folders = {"images": "{split}", "panoptic": "panoptic_{split}"}
    return common.dataset_paths(root, "panoptic_{split}.json", folders)


def _is_complete(root: str) -> bool:
    return common.is_complete(_paths(root))


def _hsv_rgb(hue: float, sat: float, val: float) -> list[int]:
    return [int(round(255 * c)) for c in colorsys.hsv_to_rgb(hue % 1.0, sat, val)]


class StuffPainter:
    """Draws the stuff layout (label map) and the stuff textures of one image.

    Args:
        specs: (name, texture, hue, saturation, value) per stuff class.
        wall_prob: probability of a vertical block of a third class (when there is one).
        line_range: the split line's mean height, as a fraction of the image height.
        wave_amplitude: largest amplitude of the split line, as a fraction of the image height.
        block_width_range: width of the vertical block, as a fraction of the image width.
        texture_std: std of the per-pixel noise.
        brick_size: (height, width) of a brick in pixels.
    """

    def __init__(
        self,
        *,
        specs: tuple[tuple[str, str, float, float, float], ...],
        wall_prob: float = 0.5,
        line_range: tuple[float, float] = (0.3, 0.7),
        wave_amplitude: float = 0.12,
        block_width_range: tuple[float, float] = (0.15, 0.4),
        texture_std: float = 8.0,
        brick_size: tuple[int, int] = (8, 16),
    ):
        self.specs = specs
        self.wall_prob = wall_prob
        self.line_range = line_range
        self.wave_amplitude = wave_amplitude
        self.block_width_range = block_width_range
        self.texture_std = texture_std
        self.brick_size = brick_size

    def layout(self, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
        """Stuff class index per pixel, int64 [h, w]."""
        k = len(self.specs)
        order = rng.permutation(k)
        labels = np.full((h, w), order[0], dtype=np.int64)
        if k == 1:
            return labels
        xs = np.arange(w, dtype=np.float64)
        line = h * rng.uniform(*self.line_range)
        for _ in range(2):  # two sine waves
            amp = h * rng.uniform(0, self.wave_amplitude)
            freq, phase = rng.uniform(0.5, 2.5), rng.uniform(0, 2 * math.pi)
            line = line + amp * np.sin(2 * math.pi * freq * xs / w + phase)
        labels[np.arange(h)[:, None] >= line[None, :]] = order[1]
        if k > 2 and rng.random() < self.wall_prob:
            bw = max(1, int(round(w * rng.uniform(*self.block_width_range))))
            x0 = int(rng.integers(0, w - bw + 1))
            bottom = int(round(h * rng.uniform(0.4, 1.0)))
            labels[:bottom, x0 : x0 + bw] = order[2]
        return labels

    def texture(self, rng: np.random.Generator, k: int, h: int, w: int) -> np.ndarray:
        """float32 RGB texture [h, w, 3] of stuff class ``k``."""
        _, kind, hue, sat, val = self.specs[k]
        base = np.asarray(_hsv_rgb(hue + rng.uniform(-0.02, 0.02), sat, val), dtype=np.float32)
        img = np.broadcast_to(base, (h, w, 3)).copy()
        ys = np.arange(h, dtype=np.float32)[:, None]
        xs = np.arange(w, dtype=np.float32)[None, :]
        if kind == "gradient":
            img += (40.0 * (1.0 - ys / max(h - 1, 1)))[..., None]
        elif kind == "grain":
            img += rng.normal(0, 3 * self.texture_std, (h, w, 1)).astype(np.float32)
        elif kind == "bricks":
            bh, bw = self.brick_size
            row = (ys // bh).astype(np.int64)
            shift = (row % 2) * (bw // 2)
            mortar = ((ys % bh) < 1) | (((xs + shift) % bw) < 1)
            img[mortar] -= 60.0
        elif kind == "ripples":
            img += (20.0 * np.sin(ys * rng.uniform(0.5, 0.9)) * np.ones_like(xs))[..., None]
        elif kind == "streaks":
            img += (25.0 * np.sin(xs * rng.uniform(0.8, 1.4)) * np.ones_like(ys))[..., None]
        else:
            raise ValueError(f"Unknown stuff texture '{kind}'")
        img += rng.normal(0, self.texture_std, (h, w, 3)).astype(np.float32)
        return img


def _bbox_area(mask: np.ndarray) -> tuple[list[int], int]:
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1], int(len(xs))


def _categories(sampler: ShapeSampler, painter: StuffPainter) -> list[dict[str, Any]]:
    cats = []
    for cat, (_, colour) in zip(sampler.categories, sampler.specs):
        cats.append({**cat, "isthing": 1, "color": _hsv_rgb(COLOUR_HUES[colour], 0.9, 0.9)})
    first_stuff = 2 * len(sampler.specs) + 1
    for j, (name, _, hue, sat, val) in enumerate(painter.specs):
        cats.append(
            {
                "id": first_stuff + j,
                "name": name,
                "supercategory": "stuff",
                "isthing": 0,
                "color": _hsv_rgb(hue, sat, val),
            }
        )
    return cats


def _sample(
    rng: np.random.Generator, sampler: ShapeSampler, painter: StuffPainter, stuff_ids: list[int]
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """One image: RGB uint8 [H, W, 3], segment ids int64 [H, W], segments_info."""
    image, objects = sampler.sample_image(rng)
    h, w = image.shape[:2]
    labels = painter.layout(rng, h, w)
    ids = np.zeros((h, w), dtype=np.int64)
    stuff_img = np.zeros((h, w, 3), dtype=np.float32)
    for k in np.unique(labels):
        region = labels == k
        stuff_img[region] = painter.texture(rng, int(k), h, w)[region]
        ids[region] = stuff_ids[k] * _SEGMENT_ID_STRIDE + 1
    covered = np.zeros((h, w), dtype=bool)
    for i, obj in enumerate(objects):  # paint order: later objects win
        mask = rasterize_segmentation([obj["polygon"]], h, w)
        ids[mask] = obj["category_id"] * _SEGMENT_ID_STRIDE + i + 1
        covered |= mask
    image = image.copy()
    image[~covered] = np.clip(stuff_img[~covered], 0, 255).astype(np.uint8)
    segments = []
    for seg_id in np.unique(ids):
        if seg_id == 0:
            continue
        bbox, area = _bbox_area(ids == seg_id)
        cat = int(seg_id) // _SEGMENT_ID_STRIDE
        segments.append(
            {"id": int(seg_id), "category_id": cat, "iscrowd": 0, "bbox": bbox, "area": area}
        )
    return image, ids, segments


def _write_split(
    root: str,
    split: str,
    run: common.Generation,
    sampler: ShapeSampler,
    painter: StuffPainter,
    info: dict[str, Any],
) -> None:
    paths = _paths(root)
    image_dir, pan_dir = paths[f"{split}_images"], paths[f"{split}_panoptic"]
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(pan_dir, exist_ok=True)
    categories = _categories(sampler, painter)
    stuff_ids = [c["id"] for c in categories if not c["isthing"]]
    images, annotations = [], []
    for i, rng in run.images(split, "synthetic panoptic"):
        image, ids, segments = _sample(rng, sampler, painter, stuff_ids)
        stem = f"{i:06d}"
        jpeg_args = [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY]
        common.write_image(os.path.join(image_dir, f"{stem}.jpg"), image, jpeg_args)
        common.write_image(os.path.join(pan_dir, f"{stem}.png"), id2rgb(ids))
        h, w = image.shape[:2]
        images.append({"id": i + 1, "file_name": f"{stem}.jpg", "height": h, "width": w})
        annotations.append(
            {"image_id": i + 1, "file_name": f"{stem}.png", "segments_info": segments}
        )
    common.write_coco_json(paths[f"{split}_json"], info, images, annotations, categories)


def generate_synthetic_panoptic_dataset(
    root: str | os.PathLike,
    *,
    num_train: int = 256,
    num_val: int = 64,
    seed: int = 0,
    image_size: int = 256,
    num_thing_classes: int = 6,
    num_stuff_classes: int = 3,
    max_objects: int = 5,
    max_object_frac: float = 0.5,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, str]:
    """Write the synthetic panoptic dataset to ``root`` (atomically: temp folder, then rename).

    ``num_train``, ``num_val``, ``seed``, ``image_size`` and ``progress`` are those of
    :class:`mrdetr.data._dataset_dir.Generation`.

    Args:
        root: dataset folder to create.
        num_thing_classes: number of (shape, colour) thing classes.
        num_stuff_classes: number of stuff classes (first ones of ``STUFF_SPECS``).
        max_objects: things per image are uniform in [1, max_objects].
        max_object_frac: largest thing size, as a fraction of the shorter side.
        overwrite: replace an existing ``root``.

    Returns:
        Paths: ``root`` and ``{train,val}_{json,images,panoptic}``.
    """
    run = common.Generation(seed, image_size, num_train, num_val, progress)
    if not 1 <= num_stuff_classes <= len(STUFF_SPECS):
        raise ValueError(
            f"num_stuff_classes must be in [1, {len(STUFF_SPECS)}], got {num_stuff_classes}"
        )
    sampler = ShapeSampler(
        image_size=image_size,
        specs=class_specs(num_thing_classes),
        max_objects=max_objects,
        max_object_frac=max_object_frac,
    )
    painter = StuffPainter(specs=STUFF_SPECS[:num_stuff_classes])
    classes = {"num_thing_classes": num_thing_classes, "num_stuff_classes": num_stuff_classes}
    info = run.info(_DESCRIPTION, _VERSION, **classes)
    return common.generate_dataset(
        root,
        overwrite,
        _paths,
        lambda tmp, split: _write_split(tmp, split, run, sampler, painter, info),
    )


def ensure_synthetic_panoptic_dataset(root: str | os.PathLike | None = None, **kwargs: Any) -> str:
    """Return ``<root>/synthetic_panoptic``, generating it there first if it is missing.

    Args:
        root: datasets root (default: ``get_datasets_root()``).
        **kwargs: arguments of :func:`generate_synthetic_panoptic_dataset` used when generating.
    """
    from .builtin import SYNTHETIC_PANOPTIC_DIR

    return common.ensure_generated(
        root, SYNTHETIC_PANOPTIC_DIR, _is_complete, generate_synthetic_panoptic_dataset, **kwargs
    )


def main(argv: list[str] | None = None) -> dict[str, str]:
    parser = common.generator_parser(
        "python -m mrdetr.data.synthetic_panoptic",
        __doc__,
        num_train=256,
        num_val=64,
        image_size=256,
    )
    parser.add_argument("--num-thing-classes", type=int, default=6)
    parser.add_argument("--num-stuff-classes", type=int, default=3)
    return common.run_generator_cli(
        parser,
        argv,
        label="synthetic panoptic dataset",
        is_complete=_is_complete,
        generate=generate_synthetic_panoptic_dataset,
        extra=lambda args: {
            "num_thing_classes": args.num_thing_classes,
            "num_stuff_classes": args.num_stuff_classes,
        },
    )


if __name__ == "__main__":
    main()
