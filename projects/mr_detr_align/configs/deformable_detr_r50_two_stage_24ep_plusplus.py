"""Mr. DETR-Align, R50, 24 epochs (180k iterations, x0.1 at 150k), 900 queries.

Official ``projects/mr_detr_align/configs/deformable_detr_r50_two_stage_24ep_plusplus.py``: the 12ep
config with the 24ep schedule and the 24ep position embedding (temperature 20, offset 0).
"""

from ....configs.common.coco_schedule import lr_multiplier_24ep as lr_multiplier
from ....configs.common.models.mr_detr_align_r50 import model
from ...mr_detr_deformable.configs.deformable_detr_r50_two_stage_12ep_plusplus import (
    dataloader,
    optimizer,
    train,
)

model.position_embedding.temperature = 20  # 12ep: 10000
model.position_embedding.offset = 0.0  # 12ep: -0.5

train.output_dir = "./output/mr_detr_align_r50_24ep_900q"
train.max_iter = 180000  # 12ep: 90000
train.checkpointer.period = 10000
train.eval_period = 7500  # 12ep: 5000
