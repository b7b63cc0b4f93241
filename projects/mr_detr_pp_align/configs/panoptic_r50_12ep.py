"""Mr. DETR++ panoptic segmentation, R50, COCO panoptic, 12 epochs (90k iterations at batch 16).

Our configuration (the official repository ships no panoptic config): the panoptic model
(``configs/common/models/mr_detr_panoptic_r50.py``: things and stuff as queries of one 133-class space)
with the ++ MoE delta (``add_plusplus_moe``), COCO panoptic PNG + JSON data and PQ evaluation
(``configs/common/data/coco_panoptic.py``), and the Deformable 12ep schedule of the InsSeg variant.
"""

from ....configs.common.coco_schedule import lr_multiplier_12ep as lr_multiplier
from ....configs.common.data.coco_panoptic import dataloader
from ....configs.common.models.mr_detr_panoptic_r50 import model
from ....configs.common.models.mr_detr_pp_r50 import add_plusplus_moe
from ....configs.common.optim import optimizer
from ....configs.common.train import train

model = add_plusplus_moe(model)

dataloader.train.total_batch_size = 16

train.init_checkpoint = ""  # ImageNet R-50: see README "Initial weights"
train.output_dir = "./output/mr_detr_pp_panoptic_r50_12ep"
train.max_iter = 90000
train.checkpointer.period = 30000
train.eval_period = 5000
