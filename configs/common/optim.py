"""Optimizer of the official Mr. DETR recipe (as the original train_net.py builds it): AdamW 2e-4, wd 1e-4, 0.1x groups.

The model is injected at build time: ``cfg.optimizer.params.model = model``.
Swin-L configs change only ``optimizer.weight_decay = 0.05``.
"""

import torch

from mrdetr.config import LazyCall as L
from mrdetr.solver import get_param_groups

optimizer = L(torch.optim.AdamW)(
    params=L(get_param_groups)(
        base_lr="${..lr}",
        weight_decay="${..weight_decay}",
        # first matching pattern wins; substrings of parameter names
        rules=[
            {"pattern": "backbone", "lr_factor": 0.1},
            {"pattern": ["reference_points", "sampling_offsets"], "lr_factor": 0.1},
        ],
        weight_decay_norm=None,  # official: norms decay like everything else
        weight_decay_embed=None,
    ),
    lr=2e-4,
    weight_decay=1e-4,
    betas=(0.9, 0.999),
    eps=1e-8,
)
