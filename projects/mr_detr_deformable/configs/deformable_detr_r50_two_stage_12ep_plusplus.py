"""Mr. DETR-Deformable, R50, 900 queries, 12 epochs (COCO 50.7 AP)."""

from ....configs.common.coco_schedule import lr_multiplier_12ep as lr_multiplier
from ....configs.common.data.coco_detr import dataloader
from ....configs.common.models.mr_detr_r50 import model
from ....configs.common.optim import optimizer
from ....configs.common.train import train

model.num_queries = 900  # the model base has the official default of 300
model.select_box_nums_for_evaluation = 300

train.init_checkpoint = ""  # ImageNet R-50: see README "Initial weights"
train.output_dir = "./output/mr_detr_deformable_r50_12ep_900q"
train.max_iter = 90000
train.checkpointer.period = 10000
train.eval_period = 5000

dataloader.train.total_batch_size = 16
