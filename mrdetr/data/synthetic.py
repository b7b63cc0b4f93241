"""A small synthetic COCO-format detection dataset of coloured shapes (for quick starts and tests).

Each class is a (shape, colour family) pair, e.g. ``red_rectangle``, ``green_ellipse``; objects of
varied sizes (small to large) are painted on textured, low-saturation noisy backgrounds and may
overlap a little (every object keeps at least ``min_visible`` of its pixels visible; annotations
are the full shape). Category ids are odd (1, 3, 5, ...) to exercise the id remapping; every
``EMPTY_EVERY``-th image has no object. Output is deterministic for a given seed.

Usage::

    python -m mrdetr.data.synthetic --output datasets/synthetic [--num-train 512 --num-val 128
        --seed 0 --image-size 256 --num-classes 6]

Layout: ``DIR/{train,val}/*.jpg`` and ``DIR/annotations/instances_{train,val}.json``. The dataset is
written to a temporary folder that is renamed into place at the end, so an interrupted run never
leaves a half dataset.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from ._dataset_dir import ensure_generated, prepare_output, write_atomically
from ._shapes import ShapeSampler, class_specs

__all__ = ["ensure_synthetic_dataset", "generate_synthetic_dataset", "main"]

SPLITS = ("train", "val")
EMPTY_EVERY = 20  # image i is empty when i % EMPTY_EVERY == EMPTY_OFFSET
EMPTY_OFFSET = 3
_JPEG_QUALITY = 92
_FORMATS = ("jpg", "png")
_VERSION = 1


def _json_path(root: str, split: str) -> str:
    return os.path.join(root, "annotations", f"instances_{split}.json")


def _is_complete(root: str) -> bool:
    return all(
        os.path.isfile(_json_path(root, s)) and os.path.isdir(os.path.join(root, s)) for s in SPLITS
    )


def _paths(root: str) -> dict[str, str]:
    out = {"root": root}
    for split in SPLITS:
        out[f"{split}_json"] = _json_path(root, split)
        out[f"{split}_images"] = os.path.join(root, split)
    return out


def _write_split(
    root: str,
    split: str,
    num_images: int,
    sampler: ShapeSampler,
    seed: int,
    image_format: str,
    info: dict[str, Any],
    progress: bool,
) -> None:
    image_dir = os.path.join(root, split)
    os.makedirs(image_dir, exist_ok=True)
    split_id = SPLITS.index(split)
    images, annotations = [], []
    encode_args = [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY] if image_format == "jpg" else []
    for i in tqdm(range(num_images), desc=f"synthetic {split}", disable=not progress):
        rng = np.random.default_rng([seed, split_id, i])
        empty = i % EMPTY_EVERY == EMPTY_OFFSET
        image, objects = sampler.sample_image(rng, empty=empty)
        file_name = f"{i:06d}.{image_format}"
        ok, buf = cv2.imencode(f".{image_format}", image[:, :, ::-1], encode_args)  # RGB -> BGR
        if not ok:
            raise RuntimeError(f"Could not encode synthetic image {file_name}")
        buf.tofile(os.path.join(image_dir, file_name))
        image_id = i + 1
        h, w = image.shape[:2]
        images.append({"id": image_id, "file_name": file_name, "height": h, "width": w})
        for obj in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": obj["category_id"],
                    "bbox": obj["bbox"],
                    "area": obj["area"],
                    "segmentation": [obj["polygon"]],
                    "iscrowd": 0,
                }
            )
    coco = {
        "info": info,
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": sampler.categories,
    }
    os.makedirs(os.path.dirname(_json_path(root, split)), exist_ok=True)
    with open(_json_path(root, split), "w", encoding="utf-8") as f:
        json.dump(coco, f)


def generate_synthetic_dataset(
    output: str | os.PathLike,
    num_train: int = 512,
    num_val: int = 128,
    seed: int = 0,
    image_size: int = 256,
    num_classes: int = 6,
    *,
    image_format: str = "jpg",
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, str]:
    """Write the synthetic dataset to ``output`` (atomically: temp folder, then rename).

    Args:
        output: dataset folder to create.
        num_train: number of training images.
        num_val: number of validation images.
        seed: generation seed (same seed -> identical files).
        image_size: longer image side in pixels (the shorter side varies, so aspect ratios vary).
        num_classes: number of (shape, colour) classes.
        image_format: ``"jpg"`` or ``"png"``.
        overwrite: replace an existing ``output``.
        progress: show tqdm progress bars.

    Returns:
        Paths: ``root``, ``train_json``, ``val_json``, ``train_images``, ``val_images``.
    """
    if image_format not in _FORMATS:
        raise ValueError(f"image_format must be one of {_FORMATS}, got '{image_format}'")
    if num_train < 0 or num_val < 0:
        raise ValueError(f"num_train/num_val must be >= 0, got {num_train}/{num_val}")
    output = prepare_output(output, overwrite)
    sampler = ShapeSampler(image_size=image_size, specs=class_specs(num_classes))
    info = {
        "description": "mrdetr synthetic shapes",
        "version": _VERSION,
        "generator": {
            "seed": seed,
            "image_size": image_size,
            "num_classes": num_classes,
            "num_train": num_train,
            "num_val": num_val,
        },
    }

    def write(tmp: str) -> None:
        for split, count in zip(SPLITS, (num_train, num_val)):
            _write_split(tmp, split, count, sampler, seed, image_format, info, progress)

    write_atomically(output, overwrite, write)
    return _paths(output)


def ensure_synthetic_dataset(root: str | os.PathLike | None = None, **kwargs: Any) -> str:
    """Return ``<root>/synthetic``, generating it there first if it is missing.

    Args:
        root: datasets root (default: ``get_datasets_root()``, i.e. ``$MRDETR_DATASETS``,
            ``$DETECTRON2_DATASETS`` or ``./datasets``).
        **kwargs: arguments of :func:`generate_synthetic_dataset` used when generating.
    """
    from .builtin import SYNTHETIC_DIR, get_datasets_root

    path = os.path.abspath(os.path.join(os.fspath(root or get_datasets_root()), SYNTHETIC_DIR))
    return ensure_generated(path, _is_complete, generate_synthetic_dataset, **kwargs)


def main(argv: list[str] | None = None) -> dict[str, str]:
    parser = argparse.ArgumentParser(
        prog="python -m mrdetr.data.synthetic", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--output", required=True, help="dataset folder to create")
    parser.add_argument("--num-train", type=int, default=512)
    parser.add_argument("--num-val", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=256, help="longer image side")
    parser.add_argument("--num-classes", type=int, default=6)
    parser.add_argument("--format", choices=_FORMATS, default="jpg")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--if-missing",
        action="store_true",
        help="do nothing when a complete dataset already exists at --output",
    )
    args = parser.parse_args(argv)
    if args.if_missing and not args.overwrite and _is_complete(os.path.abspath(args.output)):
        print(f"synthetic dataset already present at {args.output}; nothing to do")
        return {}
    paths = generate_synthetic_dataset(
        args.output,
        num_train=args.num_train,
        num_val=args.num_val,
        seed=args.seed,
        image_size=args.image_size,
        num_classes=args.num_classes,
        image_format=args.format,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    for key, value in paths.items():
        print(f"{key}: {value}")
    return paths


if __name__ == "__main__":
    main()
