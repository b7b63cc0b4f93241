"""Exponential moving average (EMA) of model weights."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from mrdetr.engine.train_loop import HookBase

__all__ = ["EMAHook", "ModelEMA", "unwrap_model"]

logger = logging.getLogger(__name__)


def unwrap_model(model: nn.Module) -> nn.Module:
    """Return the module inside a ``DistributedDataParallel``/``DataParallel`` wrapper."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


class ModelEMA:
    """EMA of a model's ``state_dict``: ``ema = decay * ema + (1 - decay) * current``.

    Floating-point entries (parameters and float buffers) are averaged; other entries (integer
    buffers such as counters or index tables) are copied from the model at each update.

    Args:
        model: the model to track (DDP wrappers are unwrapped).
        decay: EMA decay per update (official detrex value 0.999).
        device: where the EMA copy lives (``None``: alongside the model; ``"cpu"`` saves GPU
            memory at the cost of a transfer per update).
    """

    def __init__(
        self, model: nn.Module, *, decay: float = 0.999, device: str | torch.device | None = None
    ) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"ModelEMA: decay={decay} must be in [0, 1].")
        self.decay = float(decay)
        self.device = None if device is None else torch.device(device)
        self.state: dict[str, torch.Tensor] = {
            name: tensor.detach().to(self.device or tensor.device, copy=True)
            for name, tensor in unwrap_model(model).state_dict().items()
        }

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the EMA one step towards ``model``'s current weights."""
        current = unwrap_model(model).state_dict()
        if current.keys() != self.state.keys():
            raise KeyError(
                "ModelEMA.update: the model's state_dict keys differ from the EMA's "
                f"(missing {sorted(self.state.keys() - current.keys())[:5]}, "
                f"new {sorted(current.keys() - self.state.keys())[:5]})."
            )
        for name, ema_tensor in self.state.items():
            value = current[name].detach().to(ema_tensor.device)
            if ema_tensor.is_floating_point():
                ema_tensor.lerp_(value.to(ema_tensor.dtype), 1.0 - self.decay)
            else:
                ema_tensor.copy_(value)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Load the EMA weights into ``model`` (in place)."""
        unwrap_model(model).load_state_dict(self.state, strict=True)

    @contextmanager
    def apply_to(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily swap the EMA weights into ``model``; the original weights come back after.

        Example::

            with ema.apply_to(model):
                results = evaluate(model)
        """
        inner = unwrap_model(model)
        backup = {name: tensor.detach().clone() for name, tensor in inner.state_dict().items()}
        self.copy_to(inner)
        try:
            yield model
        finally:
            inner.load_state_dict(backup, strict=True)

    def state_dict(self) -> dict[str, object]:
        """Plain, ``weights_only``-loadable state: ``{"decay": float, "state": {name: tensor}}``."""
        return {"decay": self.decay, "state": dict(self.state)}

    def load_state_dict(self, state_dict: dict[str, object]) -> None:
        """Restore from :meth:`state_dict` (tensors are copied into the existing EMA tensors).

        Raises:
            KeyError: when the stored keys do not match the tracked model.
        """
        stored = state_dict["state"]
        if not isinstance(stored, dict) or stored.keys() != self.state.keys():
            stored_keys = set(stored) if isinstance(stored, dict) else set()
            raise KeyError(
                "ModelEMA.load_state_dict: stored EMA keys do not match the model "
                f"(missing {sorted(self.state.keys() - stored_keys)[:5]}, "
                f"unexpected {sorted(stored_keys - self.state.keys())[:5]})."
            )
        for name, tensor in stored.items():
            self.state[name].copy_(tensor)
        stored_decay = float(state_dict.get("decay", self.decay))
        if stored_decay != self.decay:
            logger.info(
                "ModelEMA: checkpoint decay %g; keeping configured %g.", stored_decay, self.decay
            )


class EMAHook(HookBase):
    """Update a :class:`ModelEMA` from the trainer's model after every optimizer step.

    Register it before the checkpointer so saved EMA weights include the current step.

    Args:
        ema: the EMA tracker (also give it to the :class:`Checkpointer` as ``ema=``).
    """

    def __init__(self, ema: ModelEMA) -> None:
        self.ema = ema

    def after_step(self) -> None:
        self.ema.update(self.trainer.model)
