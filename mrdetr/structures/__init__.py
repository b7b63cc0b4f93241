"""Data structures shared by data, model and evaluation."""

from .boxes import (
    Boxes,
    box_cxcywh_to_xyxy,
    box_iou,
    box_xyxy_to_cxcywh,
    generalized_box_iou,
    inverse_sigmoid,
    paired_box_iou,
    paired_generalized_box_iou,
)
from .image_list import ImageList
from .instances import Instances

__all__ = [
    "Boxes",
    "ImageList",
    "Instances",
    "box_cxcywh_to_xyxy",
    "box_iou",
    "box_xyxy_to_cxcywh",
    "generalized_box_iou",
    "inverse_sigmoid",
    "paired_box_iou",
    "paired_generalized_box_iou",
]
