"""Mr. DETR criterion: per-route matching, focal/L1/GIoU losses and the loss-weight table."""

from mrdetr.structures import paired_box_iou, paired_generalized_box_iou

from .align import AlignCriterion, ia_bce_loss, rank_weights
from .criterion import LossContext, MrDETRCriterion, RouteLosses
from .dn_criterion import DNCriterion
from .losses import giou_loss, l1_loss, sigmoid_focal_loss
from .naming import LOSS_TERMS, dn_layer_suffix, encoder_suffix, layer_suffix
from .weights import (
    DEFAULT_BASE_WEIGHTS,
    DEFAULT_ENCODER_WEIGHTS,
    apply_weights,
    build_weight_dict,
)

__all__ = [
    "AlignCriterion",
    "DNCriterion",
    "DEFAULT_BASE_WEIGHTS",
    "DEFAULT_ENCODER_WEIGHTS",
    "LOSS_TERMS",
    "LossContext",
    "MrDETRCriterion",
    "RouteLosses",
    "apply_weights",
    "build_weight_dict",
    "dn_layer_suffix",
    "encoder_suffix",
    "giou_loss",
    "ia_bce_loss",
    "l1_loss",
    "layer_suffix",
    "paired_box_iou",
    "paired_generalized_box_iou",
    "rank_weights",
    "sigmoid_focal_loss",
]
