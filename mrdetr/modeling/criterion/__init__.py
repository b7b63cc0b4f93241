"""Mr. DETR criterion: per-route matching, focal/L1/GIoU losses and the loss-weight table."""

from .criterion import MrDETRCriterion
from .losses import giou_loss, l1_loss, paired_generalized_box_iou, sigmoid_focal_loss
from .naming import LOSS_TERMS, ROUTE_LOSSES, RouteLossSpec, encoder_suffix, layer_suffix
from .weights import (
    DEFAULT_BASE_WEIGHTS,
    DEFAULT_ENCODER_WEIGHTS,
    apply_weights,
    build_weight_dict,
)

__all__ = [
    "DEFAULT_BASE_WEIGHTS",
    "DEFAULT_ENCODER_WEIGHTS",
    "LOSS_TERMS",
    "ROUTE_LOSSES",
    "MrDETRCriterion",
    "RouteLossSpec",
    "apply_weights",
    "build_weight_dict",
    "encoder_suffix",
    "giou_loss",
    "l1_loss",
    "layer_suffix",
    "paired_generalized_box_iou",
    "sigmoid_focal_loss",
]
