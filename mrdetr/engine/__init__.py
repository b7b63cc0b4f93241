"""Training engine: trainer + hooks, launch/DDP, CLI defaults and the config-driven runner."""

from __future__ import annotations

from .defaults import default_argument_parser, default_setup, resolve_device
from .ema import ModelEMA, unwrap_model
from .hooks import (
    EMAHook,
    EvalHook,
    IterationTimer,
    LRScheduler,
    PeriodicCheckpointer,
    PeriodicWriter,
)
from .launch import create_ddp_model, launch
from .stop_signal import StopOnSignal
from .train_loop import HookBase, Trainer, TrainingStopped, build_grad_scaler

__all__ = [
    "EMAHook",
    "EvalHook",
    "HookBase",
    "IterationTimer",
    "LRScheduler",
    "ModelEMA",
    "PeriodicCheckpointer",
    "PeriodicWriter",
    "StopOnSignal",
    "Trainer",
    "TrainingStopped",
    "build_grad_scaler",
    "create_ddp_model",
    "default_argument_parser",
    "default_setup",
    "launch",
    "resolve_device",
    "unwrap_model",
]
