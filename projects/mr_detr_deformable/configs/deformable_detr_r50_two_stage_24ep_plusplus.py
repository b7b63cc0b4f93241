"""Mr. DETR-Deformable, R50, 900 queries, 24 epochs (COCO 51.4 AP)."""

from ....configs.common.coco_schedule import lr_multiplier_24ep as lr_multiplier
from .deformable_detr_r50_two_stage_12ep_plusplus import dataloader, model, optimizer, train

# 24-epoch position embedding (12ep: temperature 10000, offset -0.5)
model.position_embedding.temperature = 20
model.position_embedding.offset = 0.0

train.output_dir = "./output/mr_detr_deformable_r50_24ep_900q"
train.max_iter = 180000  # LR x0.1 at 150k (lr_multiplier_24ep)
train.eval_period = 7500
