"""Optimizer parameter groups and LR schedules."""

from __future__ import annotations

from .lr_scheduler import LRMultiplier, WarmupParamScheduler, step_decay_multiplier
from .param_groups import DEFAULT_PARAM_GROUP_RULES, get_param_groups, largest_param_group

__all__ = [
    "DEFAULT_PARAM_GROUP_RULES",
    "LRMultiplier",
    "WarmupParamScheduler",
    "get_param_groups",
    "largest_param_group",
    "step_decay_multiplier",
]
