"""Mr. DETR-Align, Swin-L (ImageNet-22k, 384, window 12), 4 scales, 12 epochs, 900 queries.

Official ``projects/mr_detr_align/configs/deformable_detr_swinl_two_stage_12ep_plusplus.py``: the Align R50
12ep config with the Swin-L backbone of ``configs/common/models/mr_detr_swinl.py`` (neck inputs p1..p3,
384/768/1536 channels) and the Swin training script's weight decay 0.05.
"""

from ....configs.common.models.mr_detr_swinl import model as _swinl
from .deformable_detr_r50_two_stage_12ep_plusplus import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

model.backbone = _swinl.backbone  # R50: ResNet res3..res5
model.neck.in_channels = _swinl.neck.in_channels  # R50: [512, 1024, 2048]
model.neck.in_features = _swinl.neck.in_features  # R50: ["res3", "res4", "res5"]

optimizer.weight_decay = 0.05  # R50: 1e-4 (official train_net_swin.py)
# Microsoft's ImageNet-22k Swin-L file (plain keys, loaded with
# mrdetr.checkpoint.swin.load_swin_imagenet); place it here or override on the CLI.
train.init_checkpoint = "output/swin_large_patch4_window12_384_22k.pth"
train.output_dir = "./output/mr_detr_align_swinl_two_stage_12ep_plusplus"
