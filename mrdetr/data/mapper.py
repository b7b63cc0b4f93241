"""Dataset dict -> model input dict (image tensor + transformed ground truth)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from mrdetr.structures import Boxes, Instances

from .detection_utils import (
    SUPPORTED_IMAGE_FORMATS,
    BadImageError,
    annotation_boxes_xyxy,
    rasterize_segmentation,
    read_image,
)

__all__ = ["DetrDatasetMapper"]

logger = logging.getLogger(__name__)

_BAD_IMAGE_POLICIES = ("skip", "raise")


class DetrDatasetMapper:
    """Read the image of a dataset dict, augment it with its boxes (and masks), build the model input.

    Output dict: ``image`` uint8 [3, H, W] (RGB unless ``img_format="BGR"``), ``height``/``width``
    (the original size, in which predictions are returned), ``image_id``, ``file_name`` and, in
    training, ``instances``: ``Instances((H, W), gt_boxes=Boxes [n, 4] xyxy float32,
    gt_classes=int64 [n], gt_masks=bool [n, H, W] when mask_on)``. Crowd annotations are dropped in
    training; at test time no ``instances`` are produced (the evaluator reads the JSON).

    Args:
        is_train: training mode (ground truth is produced).
        augmentation: a v2 transform (or a list, composed in order) acting on the sample dict
            ``{"image", "boxes", "labels", "masks"}`` (see :mod:`mrdetr.data.transforms`).
        mask_on: rasterise ``segmentation`` (polygons/RLE) into ``gt_masks``.
        img_format: channel order of ``image``: ``"RGB"`` or ``"BGR"``.
        on_bad_image: ``"skip"`` (warn once per file and return None; the loaders drop Nones) or
            ``"raise"`` (a ``BadImageError`` naming the file).
    """

    def __init__(
        self,
        *,
        is_train: bool,
        augmentation: Callable[[dict[str, Any]], dict[str, Any]] | Sequence[Callable],
        mask_on: bool = False,
        img_format: str = "RGB",
        on_bad_image: str = "skip",
    ):
        if on_bad_image not in _BAD_IMAGE_POLICIES:
            raise ValueError(
                f"on_bad_image must be one of {_BAD_IMAGE_POLICIES}, got '{on_bad_image}'"
            )
        if img_format not in SUPPORTED_IMAGE_FORMATS:
            raise ValueError(
                f"img_format must be one of {SUPPORTED_IMAGE_FORMATS}, got '{img_format}'"
            )
        if isinstance(augmentation, Sequence):
            augmentation = v2.Compose(list(augmentation))
        self.is_train = is_train
        self.augmentation = augmentation
        self.mask_on = mask_on
        self.img_format = img_format
        self.on_bad_image = on_bad_image
        self._warned: set[str] = set()

    def __repr__(self) -> str:
        return (
            f"DetrDatasetMapper(is_train={self.is_train}, mask_on={self.mask_on}, "
            f"img_format='{self.img_format}', on_bad_image='{self.on_bad_image}',\n"
            f"  augmentation={self.augmentation})"
        )

    def _read(self, dataset_dict: dict[str, Any]) -> torch.Tensor | None:
        file_name = dataset_dict["file_name"]
        try:
            image = read_image(file_name, img_format=self.img_format)
            expected = (dataset_dict.get("height"), dataset_dict.get("width"))
            actual = tuple(image.shape[1:])
            if None not in expected and expected != actual:
                raise BadImageError(
                    f"Image '{file_name}' has size (h, w)={actual} but its dataset dict says {expected}"
                )
        except BadImageError as e:
            if self.on_bad_image == "raise":
                raise
            if file_name not in self._warned:  # once per file and process
                self._warned.add(file_name)
                logger.warning("Skipping image: %s", e)
            return None
        return image

    def _sample(
        self, image: torch.Tensor, annotations: list[dict[str, Any]], file_name: str
    ) -> dict:
        h, w = image.shape[1:]
        sample: dict[str, Any] = {
            "image": tv_tensors.Image(image),
            "boxes": tv_tensors.BoundingBoxes(
                annotation_boxes_xyxy(annotations, file_name), format="XYXY", canvas_size=(h, w)
            ),
            "labels": torch.tensor([int(a["category_id"]) for a in annotations], dtype=torch.int64),
        }
        if self.mask_on:
            masks = np.zeros((len(annotations), h, w), dtype=bool)
            for i, anno in enumerate(annotations):
                if "segmentation" not in anno:
                    raise ValueError(
                        f"mask_on=True but annotation {i} of '{file_name}' has no 'segmentation'"
                    )
                masks[i] = rasterize_segmentation(anno["segmentation"], h, w)
            sample["masks"] = tv_tensors.Mask(torch.from_numpy(masks))
        return sample

    def __call__(self, dataset_dict: dict[str, Any]) -> dict[str, Any] | None:
        """Map one dataset dict (not modified) to a model input dict, or None for a skipped image."""
        dataset_dict = copy.deepcopy(dataset_dict)
        image = self._read(dataset_dict)
        if image is None:
            return None
        annotations = dataset_dict.pop("annotations", [])
        if self.is_train:
            annotations = [a for a in annotations if int(a.get("iscrowd", 0)) == 0]
        else:
            annotations = []
        sample = self.augmentation(self._sample(image, annotations, dataset_dict["file_name"]))
        image = sample["image"].as_subclass(torch.Tensor)
        out = {
            "image": image,
            "height": dataset_dict.get("height", image.shape[1]),
            "width": dataset_dict.get("width", image.shape[2]),
            "image_id": dataset_dict.get("image_id"),
            "file_name": dataset_dict["file_name"],
        }
        if self.is_train:
            instances = Instances(
                tuple(image.shape[1:]),
                gt_boxes=Boxes(sample["boxes"].as_subclass(torch.Tensor).to(torch.float32)),
                gt_classes=sample["labels"].to(torch.int64),
            )
            if self.mask_on:
                instances.gt_masks = sample["masks"].as_subclass(torch.Tensor).to(torch.bool)
            out["instances"] = instances
        return out
