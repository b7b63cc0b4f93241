"""Activation checkpointing of encoder and decoder layers, and the flag that marks a recomputation.

Non-reentrant checkpointing (``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)``) runs a
layer's forward a second time during backward to rebuild the activations it did not keep. A module
with a side effect in ``forward`` -- the Mr. DETR++ MoE FFNs store their balance loss on themselves --
must not repeat it then: :func:`is_recomputing` tells it that the current forward is such a re-run.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

__all__ = ["is_recomputing", "run_layer"]

_state = threading.local()


def is_recomputing() -> bool:
    """Whether the calling code runs inside a checkpointed layer's recomputation (during backward)."""
    return getattr(_state, "depth", 0) > 0


@contextlib.contextmanager
def _recomputation() -> Iterator[None]:
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield
    finally:
        _state.depth -= 1


def _contexts() -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
    """``context_fn`` of ``checkpoint``: nothing around the first forward, the flag around the re-run."""
    return contextlib.nullcontext(), _recomputation()


def run_layer(layer: nn.Module, *args, use_checkpoint: bool = False) -> Tensor:
    """``layer(*args)``, recomputed in backward when ``use_checkpoint`` and the layer trains with grad.

    Args:
        layer: an encoder or decoder layer.
        *args: its positional arguments.
        use_checkpoint: checkpoint the call (non-reentrant); ignored at eval or under ``no_grad``.
    """
    if use_checkpoint and layer.training and torch.is_grad_enabled():
        return checkpoint(layer, *args, use_reentrant=False, context_fn=_contexts)
    return layer(*args)
