"""Mr. DETR-Align, R50, 12 epochs (90k iterations at batch 16), 900 queries.

Official ``projects/mr_detr_align/configs/deformable_detr_r50_two_stage_12ep_plusplus.py``: the Deformable
12ep recipe (checkpoint every 10k, evaluation every 5k) with the Align model.
"""

from ....configs.common.models.mr_detr_align_r50 import model
from ...mr_detr_deformable.configs.deformable_detr_r50_two_stage_12ep_plusplus import (
    dataloader,
    lr_multiplier,
    optimizer,
    train,
)

train.output_dir = "./output/mr_detr_align_r50_12ep_900q"
train.checkpointer.period = 10000
train.eval_period = 5000
