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

import os
from typing import Any

import cv2

from . import _dataset_dir as common
from ._shapes import ShapeSampler, class_specs

__all__ = ["ensure_synthetic_dataset", "generate_synthetic_dataset", "main"]

SPLITS = common.SPLITS

EMPTY_EVERY = 20  # image i is empty when i % EMPTY_EVERY == EMPTY_OFFSET
EMPTY_OFFSET = 3
_JPEG_QUALITY = 92
_FORMATS = ("jpg", "png")
_VERSION = 1
_DESCRIPTION = "mrdetr synthetic shapes"


def _paths(root: str) -> dict[str, str]:
    return common.dataset_paths(root, "instances_{split}.json", {"images": "{split}"})


def _is_complete(root: str) -> bool:
    return common.is_complete(_paths(root))


def _write_split(
    root: str,
    split: str,
    run: common.Generation,
    sampler: ShapeSampler,
    image_format: str,
    info: dict[str, Any],
) -> None:
    image_dir = os.path.join(root, split)
    os.makedirs(image_dir, exist_ok=True)
    images, annotations = [], []
    encode_args = [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY] if image_format == "jpg" else []
    for i, rng in run.images(split, "synthetic"):
        empty = i % EMPTY_EVERY == EMPTY_OFFSET
        image, objects = sampler.sample_image(rng, empty=empty)
        file_name = f"{i:06d}.{image_format}"
        common.write_image(os.path.join(image_dir, file_name), image, encode_args)
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
    json_path = _paths(root)[f"{split}_json"]
    common.write_coco_json(json_path, info, images, annotations, sampler.categories)


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

    ``num_train``, ``num_val``, ``seed``, ``image_size`` (the longer side; the shorter one varies,
    so aspect ratios vary) and ``progress`` are those of :class:`mrdetr.data._dataset_dir.Generation`.

    Args:
        output: dataset folder to create.
        num_classes: number of (shape, colour) classes.
        image_format: ``"jpg"`` or ``"png"``.
        overwrite: replace an existing ``output``.

    Returns:
        Paths: ``root``, ``train_json``, ``val_json``, ``train_images``, ``val_images``.
    """
    if image_format not in _FORMATS:
        raise ValueError(f"image_format must be one of {_FORMATS}, got '{image_format}'")
    run = common.Generation(seed, image_size, num_train, num_val, progress)
    sampler = ShapeSampler(image_size=image_size, specs=class_specs(num_classes))
    info = run.info(_DESCRIPTION, _VERSION, num_classes=num_classes)

    def write_split(tmp: str, split: str) -> None:
        _write_split(tmp, split, run, sampler, image_format, info)

    return common.generate_dataset(output, overwrite, _paths, write_split)


def ensure_synthetic_dataset(root: str | os.PathLike | None = None, **kwargs: Any) -> str:
    """Return ``<root>/synthetic``, generating it there first if it is missing.

    Args:
        root: datasets root (default: ``get_datasets_root()``, i.e. ``$MRDETR_DATASETS``,
            ``$DETECTRON2_DATASETS`` or ``./datasets``).
        **kwargs: arguments of :func:`generate_synthetic_dataset` used when generating.
    """
    from .builtin import SYNTHETIC_DIR

    return common.ensure_generated(
        root, SYNTHETIC_DIR, _is_complete, generate_synthetic_dataset, **kwargs
    )


def main(argv: list[str] | None = None) -> dict[str, str]:
    parser = common.generator_parser(
        "python -m mrdetr.data.synthetic", __doc__, num_train=512, num_val=128, image_size=256
    )
    parser.add_argument("--num-classes", type=int, default=6)
    parser.add_argument("--format", choices=_FORMATS, default="jpg")
    return common.run_generator_cli(
        parser,
        argv,
        label="synthetic dataset",
        is_complete=_is_complete,
        generate=generate_synthetic_dataset,
        extra=lambda args: {"num_classes": args.num_classes, "image_format": args.format},
    )


if __name__ == "__main__":
    main()
