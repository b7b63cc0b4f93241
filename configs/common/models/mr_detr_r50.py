"""Mr. DETR-Deformable (Deformable-DETR++ two-stage, R50, 4 scales) with its three decoder routes.

Values are the official ``projects/mr_detr_deformable`` ones; users override them with the same keys
(``model.num_queries``, ``model.select_box_nums_for_evaluation``, ``model.transformer.encoder.num_layers``).
"""

import torch.nn as nn

from mrdetr.config import LazyCall as L
from mrdetr.layers import MLP, PositionEmbeddingSine
from mrdetr.modeling.backbone import ResNet
from mrdetr.modeling.criterion import MrDETRCriterion, build_weight_dict
from mrdetr.modeling.matcher import HungarianMatcher, OneToManyAssigner
from mrdetr.modeling.meta_arch import MrDETR
from mrdetr.modeling.neck import ChannelMapper
from mrdetr.modeling.transformer import (
    DeformableEncoder,
    MrDETRTransformer,
    MultiRouteDecoder,
    ProposalHead,
    TwoStageProposals,
)


def _proposal_head(embed_dim: str, num_classes: str):
    return L(ProposalHead)(
        class_embed=L(nn.Linear)(in_features=embed_dim, out_features=num_classes),
        bbox_embed=L(MLP)(input_dim=embed_dim, hidden_dim=embed_dim, output_dim=4, num_layers=3),
    )


model = L(MrDETR)(
    backbone=L(ResNet)(
        depth=50,
        out_features=("res3", "res4", "res5"),
        freeze_at=1,
        stem_out_channels=64,
        res2_out_channels=256,
    ),
    neck=L(ChannelMapper)(
        in_channels=[512, 1024, 2048],
        in_features=["res3", "res4", "res5"],
        out_channels="${..embed_dim}",
        num_outs=4,
        num_groups=32,
    ),
    position_embedding=L(PositionEmbeddingSine)(
        num_pos_feats=128, temperature=10000, normalize=True, offset=-0.5
    ),
    transformer=L(MrDETRTransformer)(
        encoder=L(DeformableEncoder)(
            num_layers=6,
            use_checkpoint=False,
            embed_dim="${...embed_dim}",
            num_heads=8,
            num_levels="${..num_feature_levels}",
            num_points=4,
            ffn_dim=2048,
            dropout=0.0,
            msda_backend="auto",
        ),
        decoder=L(MultiRouteDecoder)(
            num_layers=6,
            embed_dim="${...embed_dim}",
            num_heads=8,
            num_levels="${..num_feature_levels}",
            num_points=4,
            ffn_dim=2048,
            dropout=0.0,
            num_instruction_tokens=10,
            msda_backend="auto",
            use_checkpoint=False,
        ),
        proposals=L(TwoStageProposals)(
            heads={
                "primary": _proposal_head("${....embed_dim}", "${......num_classes}"),
                "instruct": _proposal_head("${....embed_dim}", "${......num_classes}"),
            },
            embed_dim="${...embed_dim}",
            num_queries="${...num_queries}",
        ),
        embed_dim="${..embed_dim}",
        num_feature_levels=4,
        query_pos_feats=128,  # 4 box coordinates x 128 = 2 * embed_dim
        query_pos_temperature=10000,
    ),
    num_classes=80,
    num_queries=300,
    embed_dim=256,
    criterion=L(MrDETRCriterion)(
        num_classes="${..num_classes}",
        matcher=L(HungarianMatcher)(cost_class=2.0, cost_bbox=5.0, cost_giou=2.0),
        # Stage2Assigner: the positive cap uses a fixed 900 "num_queries" in every official
        # Deformable config, whatever the real number of queries (300 for InsSeg).
        one_to_many_matcher=L(OneToManyAssigner)(
            num_queries=900, positive_fraction=0.25, max_k=6, iou_weight=0.7, threshold=0.4
        ),
        # MS-DETR trick: the encoder heads are matched on their anchors, without class cost.
        encoder_matcher=L(HungarianMatcher)(cost_class=0.0, cost_bbox=5.0, cost_giou=2.0),
        encoder_match_on_anchors=True,
        one_to_many_normalizer_scale=1.0,
        log_route_stats=False,  # o2m/<route>/positive_fraction ... training scalars
    ),
    weight_dict=L(build_weight_dict)(
        base={"loss_class": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0},
        num_decoder_layers="${..transformer.decoder.num_layers}",
        encoder={"loss_class": 6.0, "loss_bbox": 15.0, "loss_giou": 6.0},
    ),
    pixel_mean=[123.675, 116.28, 103.53],
    pixel_std=[58.395, 57.12, 57.375],
    train_routes=["primary", "instruct", "sep_ffn"],
    select_box_nums_for_evaluation=300,
    score_fusion_exponents=[
        2.001,
        1.853,
    ],  # eval-time cross-layer score fusion (official constants)
    prior_prob=0.01,
    instruct_proposal_wh_bias=-2.0,
    eval_padding_mask=True,  # the official code uses an all-zero mask at eval (a bug)
    padding_mask_mode="interpolate",  # official; "exact" marks only tokens an image has alone
    size_divisibility=0,  # official: no rounding of the padded batch size
)
