"""Mr. DETR-Align, Swin-L, 5 scales, COCO fine-tuning from the Objects365-pretrained model (61.8 AP).

Delta over the Swin-L 4-scale Align config (official
``..._swinl_two_stage_12ep_plusplus_5scale_fintuning.py`` values):
- 5 feature levels: Swin outputs p0..p3 (stride 4 added) + the extra stride-64 level;
- large-scale augmentation (short side 480..1536, max 2400; test 1280 / 2048), AMP on, Swin blocks
  checkpointed;
- batch and schedule stated together: 4 images per step x 4 accumulation steps = an effective batch of
  16, 90,000 optimizer steps (12 epochs) with the LR drop at 75,000. The official script counts
  360,000 micro-batches (drop at 300,000) and steps its scheduler per micro-batch; one of our iterations
  is one optimizer step, so the same recipe reads 90,000 / 75,000 here.
- LRs of the official fine-tuning script: 5e-5 (backbone and sampling offsets x0.1), weight decay 0.05.
"""

from ....configs.common.coco_schedule import iteration_step_scheduler
from .deformable_detr_swinl_two_stage_12ep_plusplus import (
    dataloader,
    model,
    optimizer,
    train,
)

model.backbone.out_indices = (0, 1, 2, 3)  # 4-scale: (1, 2, 3)
model.backbone.use_checkpoint = True
model.neck.in_channels = [192, 384, 768, 1536]
model.neck.in_features = ["p0", "p1", "p2", "p3"]
model.neck.num_outs = 5
model.transformer.num_feature_levels = 5  # encoder/decoder num_levels follow by interpolation
model.transformer.encoder.use_checkpoint = True

dataloader.train.total_batch_size = 4
dataloader.train.mapper.augmentation.min_sizes = list(range(480, 1537, 32))
dataloader.train.mapper.augmentation.max_size = 2400
dataloader.test.mapper.augmentation.min_size = 1280
dataloader.test.mapper.augmentation.max_size = 2048

optimizer.lr = 5e-5  # 4-scale COCO training: 2e-4

lr_multiplier = iteration_step_scheduler(max_iter=90000, decay_iter=75000)

train.grad_accum_steps = 4
train.max_iter = 90000
train.amp.enabled = True
train.checkpointer.period = 7500 // 4  # official: every 7,500 micro-batches
train.eval_period = 30000 // 4  # official: every 30,000 micro-batches
# the Objects365-pretrained Mr. DETR (official file name on the Hub)
train.init_checkpoint = (
    "hf://allencbzhang/Mr.DETR/MrDETR_align_swinl_12ep_900q_objects365_processed.pth"
)
train.output_dir = "./output/mr_detr_align_swinl_5scale_finetune"
