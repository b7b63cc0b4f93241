"""Mr. DETR-Deformable-InstanceSeg, R50, 24 epochs (180k iterations, x0.1 at 150k), 300 queries, top-100.

Official ``..._24ep_plusplus.py``: the InsSeg 12ep config with the 24ep schedule and the 24ep position
embedding (temperature 20, offset 0).
"""

from ....configs.common.coco_schedule import lr_multiplier_24ep as lr_multiplier
from .deformable_detr_r50_two_stage_12ep_plusplus import dataloader, model, optimizer, train

model.position_embedding.temperature = 20  # 12ep: 10000
model.position_embedding.offset = 0.0  # 12ep: -0.5

train.output_dir = "./output/mr_detr_deformable_ins_seg_r50_two_stage_24ep_plusplus"
train.max_iter = 180000  # 12ep: 90000
train.checkpointer.period = 7500  # 12ep: 30000
train.eval_period = 7500  # 12ep: 5000
