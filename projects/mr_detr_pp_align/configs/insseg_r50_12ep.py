"""Mr. DETR++ instance segmentation, R50, COCO, 12 epochs (90k iterations at batch 16).

Our configuration (the official repository ships no ++ InsSeg config): the InsSeg project config
(``projects/mr_detr_deformable_ins_seg``: mask head, mask losses, bbox + segm AP) with the ++ MoE delta
(``add_plusplus_moe``: route-aware MoE FFN in the decoder, MoE on the coarsest encoder level).
"""

from ....configs.common.models.mr_detr_pp_r50 import add_plusplus_moe
from ...mr_detr_deformable_ins_seg.configs.deformable_detr_r50_two_stage_12ep_plusplus import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

model = add_plusplus_moe(model)

train.output_dir = "./output/mr_detr_pp_insseg_r50_12ep"
