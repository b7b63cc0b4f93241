"""Mr. DETR-Deformable-InstanceSeg (R50, 4 scales): the Deformable model plus the DETR-style mask head.

Differences from ``mr_detr_r50`` (official ``projects/mr_detr_deformable_ins_seg``): mask head on the
stride-64 memory with FPN inputs projected from res5/res4/res3, mask losses (5 / 2) on the final layer of
each route, the one-to-many assigner's positive cap computed from 300 (not 900), top-100 at eval.
``add_mask_head(model)`` applies the same delta to any Mr. DETR model config (e.g. the quick-start one).
"""

from mrdetr.config import LazyCall as L
from mrdetr.modeling.criterion.masks import MrDETRMaskCriterion, build_insseg_weight_dict
from mrdetr.modeling.heads import MaskHeadSmallConv, MHAttentionMap, SegInputProjection
from mrdetr.modeling.meta_arch.mr_detr_insseg import MrDETRInstanceSeg

from .mr_detr_r50 import model


def add_mask_head(model):
    """Turn a Mr. DETR model config into Mr. DETR-InstanceSeg (in place) and return it."""
    model._target_ = MrDETRInstanceSeg
    model.seg_input_proj = L(SegInputProjection)(
        in_features=["res5", "res4", "res3"],
        in_channels=[2048, 1024, 512],  # R50 widths
        out_channels=[1024, 512, 256],
    )
    model.bbox_attention = L(MHAttentionMap)(
        query_dim="${..embed_dim}", hidden_dim="${..embed_dim}", num_heads=8, dropout=0.0
    )
    model.mask_head = L(MaskHeadSmallConv)(
        context_dim="${..embed_dim}",
        num_attention_heads="${..bbox_attention.num_heads}",
        fpn_dims="${..seg_input_proj.out_channels}",
        num_groups=8,
    )
    model.mask_threshold = 0.0
    model.select_box_nums_for_evaluation = 100

    model.criterion._target_ = MrDETRMaskCriterion
    model.criterion.one_to_many_matcher.num_queries = 300  # 900 in the detection variants
    model.criterion.num_points = 112 * 112
    model.criterion.oversample_ratio = 3.0
    model.criterion.importance_sample_ratio = 0.75

    model.weight_dict._target_ = build_insseg_weight_dict
    model.weight_dict.mask = {"loss_mask": 5.0, "loss_dice": 2.0}
    return model


model = add_mask_head(model)
