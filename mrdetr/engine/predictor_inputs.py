"""The Predictor's inputs: file paths, PIL images, numpy arrays and tensors to one RGB tensor each."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

__all__ = ["INPUT_FORMATS", "ImageInput", "check_format", "describe_input", "to_rgb_tensor"]

ImageInput = str | os.PathLike | Image.Image | np.ndarray | Tensor
INPUT_FORMATS = ("RGB", "BGR")


def check_format(value: str, name: str) -> None:
    """Raise ValueError unless ``value`` (the argument ``name``) is one of :data:`INPUT_FORMATS`."""
    if value not in INPUT_FORMATS:
        raise ValueError(f"{name} must be one of {INPUT_FORMATS}, got '{value}'")


def to_rgb_tensor(image: ImageInput, input_format: str, index: int) -> Tensor:
    """Convert one input to a [3, H, W] RGB tensor (uint8 stays uint8, anything else float32)."""
    if isinstance(image, (str, os.PathLike)):
        from ..data.detection_utils import read_image

        return read_image(os.fspath(image), img_format="RGB")
    if isinstance(image, Image.Image):
        return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"image {index}: numpy arrays must be [H, W, 3] ({input_format}), got shape {image.shape}"
            )
        if input_format == "BGR":
            image = image[:, :, ::-1]
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    elif isinstance(image, Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(
                f"image {index}: tensors must be [3, H, W] RGB, got shape {tuple(image.shape)}"
            )
        tensor = image.detach().cpu()
    else:
        raise TypeError(
            f"image {index}: expected a file path, a PIL image, a numpy array or a tensor, "
            f"got {type(image).__name__}"
        )
    if tensor.dtype == torch.uint8:
        return tensor
    tensor = tensor.float()
    bad = int((~torch.isfinite(tensor)).sum())
    if bad:
        raise ValueError(
            f"image {index}: {bad} of {tensor.numel()} pixel values are NaN or inf "
            f"(shape {tuple(tensor.shape)}); expected finite values in 0..255"
        )
    return tensor


def describe_input(image: ImageInput, model_input: dict[str, Any], index: int) -> str:
    """``image 3 'a.jpg' (1x5000 pixels, resized to 1x1333)`` for error messages."""
    name = f" '{os.fspath(image)}'" if isinstance(image, (str, os.PathLike)) else ""
    h, w = model_input["image"].shape[-2:]
    return (
        f"image {index}{name} ({model_input['height']}x{model_input['width']} pixels, "
        f"resized to {h}x{w})"
    )
