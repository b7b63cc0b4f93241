"""LR schedules: fvcore ``ParamScheduler`` multipliers applied per iteration to a torch optimizer."""

from __future__ import annotations

from typing import Any

import torch
from fvcore.common.param_scheduler import (
    ConstantParamScheduler,
    LinearParamScheduler,
    MultiStepParamScheduler,
    ParamScheduler,
)

__all__ = ["LRMultiplier", "WarmupParamScheduler", "step_decay_multiplier"]


class WarmupParamScheduler(ParamScheduler):
    """Prefix a warmup phase to another scheduler.

    During ``where < warmup_length`` the value ramps from ``warmup_factor * scheduler(0)`` to
    ``scheduler(warmup_length)`` (``"linear"``) or stays at the start value (``"constant"``);
    afterwards it is ``scheduler(where)`` (the wrapped schedule is not shifted or rescaled).

    Args:
        scheduler: the main schedule, a function of the training progress ``where`` in [0, 1).
        warmup_factor: start value as a fraction of ``scheduler(0)``.
        warmup_length: warmup duration as a fraction of training (0 disables warmup).
        warmup_method: ``"linear"`` or ``"constant"``.
    """

    _METHODS = ("linear", "constant")

    def __init__(
        self,
        scheduler: ParamScheduler,
        warmup_factor: float,
        warmup_length: float,
        warmup_method: str = "linear",
    ) -> None:
        if warmup_method not in self._METHODS:
            raise ValueError(
                f"WarmupParamScheduler: warmup_method={warmup_method!r}; expected one of {self._METHODS}."
            )
        if not 0.0 <= warmup_length < 1.0:
            raise ValueError(
                f"WarmupParamScheduler: warmup_length={warmup_length} must be in [0, 1) "
                "(a fraction of the whole schedule)."
            )
        self._scheduler = scheduler
        self._warmup_length = float(warmup_length)
        start = warmup_factor * scheduler(0.0)
        end = scheduler(self._warmup_length)
        self._warmup: ParamScheduler = (
            LinearParamScheduler(start, end)
            if warmup_method == "linear"
            else ConstantParamScheduler(start)
        )

    def __call__(self, where: float) -> float:
        if where < self._warmup_length:
            return self._warmup(where / self._warmup_length)
        return self._scheduler(where)


def step_decay_multiplier(
    *, max_iter: int, decay_iters: list[int] | tuple[int, ...], gamma: float = 0.1
) -> MultiStepParamScheduler:
    """Multiplier ``gamma ** k`` after the k-th of ``decay_iters`` (e.g. ``[82500]`` of 90000).

    Args:
        max_iter: total iterations (the schedule's length).
        decay_iters: strictly increasing iterations at which the LR is multiplied by ``gamma``.
        gamma: decay factor.
    """
    decay_iters = [int(i) for i in decay_iters]
    if any(not 0 < i < max_iter for i in decay_iters) or decay_iters != sorted(set(decay_iters)):
        raise ValueError(
            f"step_decay_multiplier: decay_iters={decay_iters} must be strictly increasing and "
            f"inside (0, max_iter={max_iter})."
        )
    values = [gamma**k for k in range(len(decay_iters) + 1)]
    return MultiStepParamScheduler(values=values, milestones=[*decay_iters, max_iter])


class LRMultiplier(torch.optim.lr_scheduler.LRScheduler):
    """Set every group's LR to ``base_lr * multiplier(iteration / max_iter)``.

    Step it once per optimizer step (the ``LRScheduler`` hook does). Each group keeps its own
    base LR (``initial_lr``), so per-group LR factors survive the schedule.

    Args:
        optimizer: the optimizer whose groups are scheduled.
        multiplier: an fvcore ``ParamScheduler`` (or any callable) mapping progress in [0, 1)
            to a factor.
        max_iter: total number of optimizer steps.
        last_iter: index of the last finished iteration (-1 for a fresh run).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        multiplier: ParamScheduler,
        max_iter: int,
        last_iter: int = -1,
    ) -> None:
        if not callable(multiplier):
            raise TypeError(
                f"LRMultiplier: multiplier must be a callable ParamScheduler, got {type(multiplier)}."
            )
        if max_iter <= 0:
            raise ValueError(f"LRMultiplier: max_iter={max_iter} must be positive.")
        self._multiplier = multiplier
        self._max_iter = int(max_iter)
        super().__init__(optimizer, last_epoch=last_iter)

    def state_dict(self) -> dict[str, Any]:
        # The multiplier is rebuilt from config; only the position and base LRs are state.
        return {"base_lrs": self.base_lrs, "last_epoch": self.last_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._last_lr = self.get_lr()  # keep get_last_lr() consistent with the restored position

    def get_lr(self) -> list[float]:
        factor = self._multiplier(self.last_epoch / self._max_iter)
        return [base_lr * factor for base_lr in self.base_lrs]
