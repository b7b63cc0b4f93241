"""Mr. DETR++ on Mr. DETR-Align, R50, 12 epochs: the Align R50 recipe + the ++ MoE layers.

Only the model changes (see ``configs/common/models/mr_detr_pp_r50.py`` for every MoE value and
whether it is "paper" or "ours"); data, optimizer, schedule and training loop are Align's.
"""

from ....configs.common.models.mr_detr_pp_r50 import add_plusplus_moe
from ...mr_detr_align.configs.deformable_detr_r50_two_stage_12ep_plusplus import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

model = add_plusplus_moe(model)
train.output_dir = "./output/mr_detr_pp_align_r50_12ep"  # differs from Align: own output folder
