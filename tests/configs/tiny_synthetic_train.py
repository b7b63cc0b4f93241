"""The tiny model (``tiny_model.py``) trained on the synthetic dataset at ~96 px, batch 2, on CPU.

Used by the CLI reliability tests: ``projects/train_net.py --config-file`` this file with
``MRDETR_DATASETS`` pointing at a generated synthetic dataset (5 classes).
"""

from ...configs.common.coco_schedule import iteration_step_scheduler
from ...configs.common.data.coco_detr import dataloader
from ...configs.common.optim import optimizer  # noqa: F401 - a key of this config
from .tiny_model import model, train  # noqa: F401 - model is a key of this config

dataloader.train.dataset = "synthetic_train"
dataloader.train.total_batch_size = 2
dataloader.train.num_workers = 0
dataloader.train.seed = 0
dataloader.train.mapper.augmentation.min_sizes = [64, 80, 96]
dataloader.train.mapper.augmentation.max_size = 128
dataloader.train.mapper.augmentation.crop_pre_sizes = [64, 80]
dataloader.train.mapper.augmentation.crop_min_size = 48
dataloader.train.mapper.augmentation.crop_max_size = 64
dataloader.test.dataset = "synthetic_val"
dataloader.test.num_workers = 0
dataloader.test.mapper.augmentation.min_size = 96
dataloader.test.mapper.augmentation.max_size = 128

lr_multiplier = iteration_step_scheduler(max_iter=6, decay_iter=5, warmup_iters=0)

train.max_iter = 6
train.eval_period = 100
train.log_period = 1
train.checkpointer.period = 3
train.seed = 0
dataloader.pop("evaluator")  # these tests check training and loading, not AP
