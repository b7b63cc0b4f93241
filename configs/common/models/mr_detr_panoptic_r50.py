"""Mr. DETR panoptic (R50, 4 scales): the InsSeg model whose classes are all panoptic categories.

Things and stuff are both predicted by the same queries, boxes and mask head (DETR-panoptic style, our
choice: the paper does not say how; see ``docs/panoptic.md``). Delta over ``mr_detr_insseg_r50``: COCO
panoptic has 133 classes of which the first 80 (contiguous ids, sorted by dataset id) are things, and
inference merges the primary route's masks into one panoptic map, and the masks come from a
query-embedding head (``QueryMaskHead``). ``add_panoptic(model, ...)`` applies the delta to any InsSeg
model config.
"""

from mrdetr.config import LazyCall as L
from mrdetr.modeling.heads import QueryMaskHead
from mrdetr.modeling.meta_arch.mr_detr_panoptic import MrDETRPanoptic

from .mr_detr_insseg_r50 import model


def add_panoptic(model, *, num_classes: int, num_thing_classes: int):
    """Turn an InsSeg model config into a panoptic one (in place) and return it.

    The contiguous ids ``0 .. num_thing_classes - 1`` are things, the rest of ``num_classes`` stuff.
    """
    model._target_ = MrDETRPanoptic
    model.num_classes = num_classes
    model.thing_class_ids = list(range(num_thing_classes))
    model.object_mask_threshold = 0.25  # ours: Mask DINO's value for sigmoid class scores
    model.overlap_threshold = 0.8  # Mask2Former / Mask DINO value
    model.min_segment_area = 0  # ours: keep every segment (PQ counts small false positives anyway)
    # ours: a query-embedding mask head (MaskFormer / Mask DINO) instead of DETR's attention-map head,
    # which learns far more slowly (docs/panoptic.md); there is no official panoptic checkpoint to match
    model.bbox_attention = None
    model.mask_head = L(QueryMaskHead)(
        embed_dim="${..embed_dim}",
        fpn_dims="${..seg_input_proj.out_channels}",
        mask_dim="${..embed_dim}",
        mlp_layers=3,
        num_groups=8,
    )
    return model


model = add_panoptic(model, num_classes=133, num_thing_classes=80)  # COCO: 80 things + 53 stuff
