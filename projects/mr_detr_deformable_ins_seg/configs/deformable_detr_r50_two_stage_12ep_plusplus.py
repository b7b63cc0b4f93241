"""Mr. DETR-Deformable-InstanceSeg, R50, 12 epochs (90k iterations at batch 16), 300 queries, top-100.

Official ``projects/mr_detr_deformable_ins_seg/configs/deformable_detr_r50_two_stage_12ep_plusplus.py``:
the Deformable 12ep recipe with the InsSeg model (``configs/common/models/mr_detr_insseg_r50.py``),
polygon masks in the training data, checkpoints every 30k iterations and evaluation (bbox + segm) every 5k.
"""

from ....configs.common.models.mr_detr_insseg_r50 import model
from ...mr_detr_deformable.configs.deformable_detr_r50_two_stage_12ep_plusplus import (
    dataloader,
    lr_multiplier,
    optimizer,
    train,
)

dataloader.train.mapper.mask_on = True  # detection: False

train.output_dir = "./output/mr_detr_deformable_ins_seg_r50_two_stage_12ep_plusplus"
train.checkpointer.period = 30000  # detection 12ep: 10000
train.eval_period = 5000
