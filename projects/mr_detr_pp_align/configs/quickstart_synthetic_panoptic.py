"""Quick start for panoptic Mr. DETR++ on the synthetic panoptic dataset (2 CPU cores).

The quick-start model (``projects/mr_detr_deformable/configs/quickstart_synthetic.py``: narrow ResNet,
d=64, 3+3 layers, 50 queries) plus the mask head, panoptic inference over 6 thing + 3 stuff classes, and
the ++ MoE; data from ``python -m mrdetr.data.synthetic_panoptic --output datasets/synthetic_panoptic``;
evaluated with PQ / SQ / RQ.
"""

from ....configs.common.data.coco_panoptic import dataloader as panoptic_dataloader
from ....configs.common.models.mr_detr_insseg_r50 import add_mask_head
from ....configs.common.models.mr_detr_panoptic_r50 import add_panoptic
from ....configs.common.models.mr_detr_pp_r50 import add_plusplus_moe
from ...mr_detr_deformable.configs.quickstart_synthetic import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

# python -m mrdetr.data.synthetic_panoptic defaults: 6 shape classes (things) + 3 background classes
model = add_panoptic(add_mask_head(model), num_classes=9, num_thing_classes=6)
model = add_plusplus_moe(model)
# the route-aware MoE needs the one-to-many routes (the detection quick start trains PRIMARY only)
model.train_routes = ["primary", "instruct", "sep_ffn"]
model.num_queries = 50
model.select_box_nums_for_evaluation = 50
model.criterion.one_to_many_matcher.num_queries = 150  # as the quick start (add_mask_head sets 300)
model.seg_input_proj.in_channels = [256, 128, 64]  # res5/res4/res3 widths of the narrow ResNet
model.seg_input_proj.out_channels = [64, 32, 16]
model.criterion.num_points = 28 * 28  # point-sampled mask losses at the small image size

dataloader.train.dataset = "synthetic_panoptic_train"
dataloader.train.mapper._target_ = panoptic_dataloader.train.mapper._target_
dataloader.train.mapper.mask_on = True
dataloader.test.dataset = "synthetic_panoptic_val"
dataloader.test.mapper._target_ = panoptic_dataloader.test.mapper._target_
dataloader.test.mapper.mask_on = True
dataloader.evaluator = panoptic_dataloader.evaluator

train.output_dir = "./output/quickstart_synthetic_panoptic"
