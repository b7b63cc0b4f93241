"""Mr. DETR-Align (R50, 4 scales): Mr. DETR-DINO with the IA-BCE class loss and rank weights.

Delta over ``mr_detr_dino_r50.py`` (official ``projects/mr_detr_align`` values):
- ``AlignCriterion``: IA-BCE class loss (alpha 0.25, negatives weighted p^2) with rank weights
  ``exp(-r / 1.5)`` on the one-to-many routes (also on their GIoU terms);
- class-loss weight 1 everywhere (decoder, DN and encoder; DINO: 2).
"""

from mrdetr.config import LazyCall as L
from mrdetr.modeling.criterion import AlignCriterion, build_weight_dict
from mrdetr.modeling.matcher import HungarianMatcher, OneToManyAssigner

from .mr_detr_dino_r50 import model

model.criterion = L(AlignCriterion)(
    num_classes="${..num_classes}",
    matcher=L(HungarianMatcher)(cost_class=2.0, cost_bbox=5.0, cost_giou=2.0),
    one_to_many_matcher=L(OneToManyAssigner)(
        num_queries=900, positive_fraction=0.25, max_k=6, iou_weight=0.8, threshold=0.4
    ),
    encoder_matcher=L(HungarianMatcher)(cost_class=2.0, cost_bbox=5.0, cost_giou=2.0),
    encoder_match_on_anchors=False,
    one_to_many_normalizer_scale=3.0,
    log_route_stats=False,  # o2m/<route>/positive_fraction ... training scalars
    align_alpha=0.25,
    align_gamma=2.0,
    rank_tau=1.5,
    min_quality=0.01,
)

model.weight_dict = L(build_weight_dict)(
    base={"loss_class": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0},  # DINO: class 2
    num_decoder_layers="${..transformer.decoder.num_layers}",
    encoder={"loss_class": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0},  # DINO: class 2
    denoising={"loss_class": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0},  # DINO: class 2
)
