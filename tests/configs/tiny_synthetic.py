"""The tiny Mr. DETR of ``tiny_model.py`` trained on the synthetic dataset (``MRDETR_DATASETS``).

A few CPU seconds per iteration: for end-to-end tests of the trackers and the cluster launcher.
Data, optimizer and schedule come from the quick-start config; only the image sizes shrink.
"""

from ...projects.mr_detr_deformable.configs.quickstart_synthetic import (  # noqa: F401
    dataloader,
    lr_multiplier,
    optimizer,
    train,
)
from .tiny_model import model

model.num_classes = 6  # the synthetic dataset's classes
model.size_divisibility = 32
model.padding_mask_mode = "exact"

dataloader.train.total_batch_size = 2
dataloader.train.num_workers = 0
dataloader.train.seed = 7
dataloader.train.mapper.augmentation.min_sizes = [64, 96]
dataloader.train.mapper.augmentation.max_size = 128
dataloader.train.mapper.augmentation.crop_pre_sizes = [80, 96]
dataloader.train.mapper.augmentation.crop_min_size = 64
dataloader.train.mapper.augmentation.crop_max_size = 96
dataloader.test.mapper.augmentation.min_size = 96
dataloader.test.mapper.augmentation.max_size = 128

train.output_dir = "./output/tiny_synthetic"
train.max_iter = 5
train.eval_period = 5  # evaluate once, at the end
train.eval_at_start = False
train.checkpointer.period = 2
train.log_period = 1
train.seed = 3
train.deterministic = True
