"""Helpers shared by dataset mappers: box modes, image reading, annotations -> tensors.

The dataset-dict format is detectron2's: one dict per image with ``file_name``, ``height``,
``width``, ``image_id`` and ``annotations`` (each with ``bbox``, ``bbox_mode``, ``category_id``,
``iscrowd`` and optionally ``segmentation`` as COCO polygons or RLE).
"""

from __future__ import annotations

import warnings
from enum import Enum
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
import torch
from PIL import Image, ImageOps
from torch import Tensor

__all__ = [
    "BadImageError",
    "BoxMode",
    "SUPPORTED_IMAGE_FORMATS",
    "annotation_boxes_xyxy",
    "decode_rle",
    "rasterize_segmentation",
    "read_image",
]

# Polygons need at least three (x, y) points.
_MIN_POLYGON_COORDS = 6
SUPPORTED_IMAGE_FORMATS = ("RGB", "BGR")


class BoxMode(str, Enum):
    """How a dataset-dict ``bbox`` is stored (absolute pixel coordinates).

    A ``str`` enum so that ``BoxMode.XYWH_ABS == "XYWH_ABS"`` and dataset dicts stay plain JSON.
    """

    XYXY_ABS = "XYXY_ABS"
    XYWH_ABS = "XYWH_ABS"


class BadImageError(OSError):
    """An image file that is missing, unreadable, or whose size disagrees with its dataset dict."""


def read_image(file_name: str, *, img_format: str = "RGB") -> Tensor:
    """Read an image file with Pillow, apply its EXIF orientation and return it as a tensor.

    Args:
        file_name: path of the image.
        img_format: channel order of the result, ``"RGB"`` or ``"BGR"``.

    Returns:
        uint8 tensor [3, H, W].

    Raises:
        BadImageError: the file is missing, cannot be decoded, or has more pixels than
            ``PIL.Image.MAX_IMAGE_PIXELS`` allows (a decompression bomb); the message names the file.
        ValueError: ``img_format`` is not supported.
    """
    if img_format not in SUPPORTED_IMAGE_FORMATS:
        raise ValueError(f"img_format must be one of {SUPPORTED_IMAGE_FORMATS}, got '{img_format}'")
    try:
        with Image.open(file_name) as img:
            img = ImageOps.exif_transpose(img)
            array = np.array(img.convert("RGB"))  # writable copy
    # PIL raises these for missing/corrupt files, and DecompressionBombError for more pixels than
    # Image.MAX_IMAGE_PIXELS allows
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise BadImageError(f"Cannot read image '{file_name}': {e}") from e
    if img_format == "BGR":
        array = array[:, :, ::-1]
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).contiguous()


def annotation_boxes_xyxy(annotations: list[dict[str, Any]], file_name: str = "?") -> Tensor:
    """Convert the ``bbox`` of each annotation to absolute (x1, y1, x2, y2).

    Args:
        annotations: annotation dicts with ``bbox`` and ``bbox_mode`` (``"XYWH_ABS"`` when absent).
        file_name: image name used in error messages.

    Returns:
        float32 tensor [N, 4].
    """
    boxes = torch.zeros((len(annotations), 4), dtype=torch.float32)
    for i, anno in enumerate(annotations):
        bbox = anno.get("bbox")
        if bbox is None or len(bbox) != 4:
            raise ValueError(
                f"Annotation {i} of '{file_name}': 'bbox' must have 4 numbers, got {bbox}"
            )
        mode = anno.get("bbox_mode", BoxMode.XYWH_ABS)
        try:
            mode = BoxMode(mode)
        except ValueError:
            raise ValueError(
                f"Annotation {i} of '{file_name}': unsupported bbox_mode '{mode}' "
                f"(expected one of {[m.value for m in BoxMode]})"
            ) from None
        x, y, a, b = (float(v) for v in bbox)
        boxes[i] = torch.tensor([x, y, x + a, y + b] if mode is BoxMode.XYWH_ABS else [x, y, a, b])
    return boxes


def rasterize_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Rasterise a COCO segmentation (polygons, uncompressed or compressed RLE, or a bitmask) to a mask.

    Args:
        segmentation: list of polygons (flat ``[x0, y0, x1, y1, ...]`` lists), an RLE dict, or a
            [height, width] array (nonzero = inside, e.g. a mask read from a panoptic PNG).
        height: image height.
        width: image width.

    Returns:
        bool array [height, width].
    """
    if isinstance(segmentation, np.ndarray):
        if segmentation.shape != (height, width):
            raise ValueError(
                f"bitmask shape {segmentation.shape} does not match the image size {(height, width)}"
            )
        return segmentation.astype(bool)
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if len(p) >= _MIN_POLYGON_COORDS and len(p) % 2 == 0]
        if not polygons:
            return np.zeros((height, width), dtype=bool)
        rles = mask_util.frPyObjects([list(map(float, p)) for p in polygons], height, width)
        rle = mask_util.merge(rles)
    elif isinstance(segmentation, dict):
        if isinstance(segmentation.get("counts"), list):
            rle = mask_util.frPyObjects(segmentation, height, width)
        else:
            rle = dict(segmentation)
            if isinstance(rle["counts"], str):
                rle["counts"] = rle["counts"].encode("ascii")
        if tuple(rle["size"]) != (height, width):
            raise ValueError(
                f"RLE size {tuple(rle['size'])} does not match the image size {(height, width)}"
            )
    else:
        raise ValueError(
            f"segmentation must be a list of polygons or an RLE dict, got {type(segmentation).__name__}"
        )
    return decode_rle(rle)


def decode_rle(rle: dict[str, Any] | list[dict[str, Any]]) -> np.ndarray:
    """``pycocotools.mask.decode`` as bool, without its NumPy-2 ``copy=False`` deprecation noise."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="pycocotools")
        warnings.filterwarnings("ignore", message=".*copy keyword.*", category=DeprecationWarning)
        return mask_util.decode(rle).astype(bool)
