"""Mr. DETR-Deformable, R50, 300 queries, 12 epochs (COCO 49.5 AP)."""

from .deformable_detr_r50_two_stage_12ep_plusplus import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

model.num_queries = 300
train.output_dir = "./output/mr_detr_deformable_r50_12ep_300q"
