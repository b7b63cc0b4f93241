"""LR multipliers for COCO schedules at total batch 16 (7,500 iterations = 1 epoch).

Official Mr. DETR: 12ep = 90k iterations with x0.1 at 82.5k (11 epochs); 24ep = 180k with x0.1 at
150k (20 epochs); no warmup. ``cfg.lr_multiplier`` is a function of training progress in [0, 1);
``LRMultiplier`` evaluates it at ``iteration / train.max_iter``.
"""

from fvcore.common.param_scheduler import MultiStepParamScheduler

from mrdetr.config import LazyCall as L
from mrdetr.solver import WarmupParamScheduler

ITERS_PER_EPOCH_16BS = 7500  # ~118k COCO train2017 images / total batch 16
WARMUP_FACTOR = 0.001  # LR at the start of a (linear) warmup, relative to the base LR


def default_coco_scheduler(
    epochs: int = 12,
    decay_epochs: int = 11,
    warmup_epochs: int = 0,
    *,
    iters_per_epoch: int = ITERS_PER_EPOCH_16BS,
    gamma: float = 0.1,
):
    """Step schedule: 1.0 until ``decay_epochs``, then ``gamma``; optional linear warmup."""
    return iteration_step_scheduler(
        max_iter=epochs * iters_per_epoch,
        decay_iter=decay_epochs * iters_per_epoch,
        warmup_iters=warmup_epochs * iters_per_epoch,
        gamma=gamma,
    )


def iteration_step_scheduler(
    max_iter: int, decay_iter: int, warmup_iters: int = 0, *, gamma: float = 0.1
):
    """Step schedule given in iterations (e.g. Objects365: 432,193 with the drop at 324,145)."""
    scheduler = L(MultiStepParamScheduler)(values=[1.0, gamma], milestones=[decay_iter, max_iter])
    return L(WarmupParamScheduler)(
        scheduler=scheduler,
        warmup_length=warmup_iters / max_iter,
        warmup_method="linear",
        warmup_factor=WARMUP_FACTOR,
    )


lr_multiplier_12ep = default_coco_scheduler(12, 11, 0)
lr_multiplier_24ep = default_coco_scheduler(24, 20, 0)
lr_multiplier_36ep = default_coco_scheduler(36, 30, 0)
lr_multiplier_50ep = default_coco_scheduler(50, 40, 0)
