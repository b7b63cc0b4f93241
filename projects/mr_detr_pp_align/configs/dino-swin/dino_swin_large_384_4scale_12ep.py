"""Mr. DETR++ on Mr. DETR-Align, Swin-L (384, 22k), 4 scales, 12 epochs (the official ++ config path).

Only the model changes over the Align Swin-L recipe (see ``configs/common/models/mr_detr_pp_r50.py``
for every MoE value and whether it is "paper" or "ours").
"""

from .....configs.common.models.mr_detr_pp_r50 import add_plusplus_moe
from ....mr_detr_align.configs.deformable_detr_swinl_two_stage_12ep_plusplus import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

model = add_plusplus_moe(model)
train.output_dir = "./output/mr_detr_pp_align_swinl_12ep"  # differs from Align: own output folder
