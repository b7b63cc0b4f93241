"""Mr. DETR-DINO, R50, 24 epochs (180k iterations, x0.1 at 150k), 300 queries.

Official ``projects/mr_detr_dino/configs/deformable_detr_r50_two_stage_24ep_plusplus.py``. Unlike the
other 24ep configs it keeps the 12ep position embedding (temperature 10000, offset -0.5: the official
switch to 20 / 0 is commented out) and uses 300 queries.
"""

from ....configs.common.coco_schedule import lr_multiplier_24ep as lr_multiplier
from ....configs.common.models.mr_detr_dino_r50 import model
from ...mr_detr_deformable.configs.deformable_detr_r50_two_stage_12ep_plusplus import (
    dataloader,
    optimizer,
    train,
)

model.num_queries = 300  # DINO 12ep: 900
model.select_box_nums_for_evaluation = 300

train.output_dir = "./output/mr_detr_dino_r50_24ep_300q"
train.max_iter = 180000  # 12ep: 90000
train.checkpointer.period = 7500  # DINO 12ep: 30000
train.eval_period = 7500  # DINO 12ep: 10000
