"""Checkpoints: our training checkpoints (:class:`Checkpointer`) and the official Mr. DETR layout.

``from mrdetr.checkpoint import load_official, Checkpointer`` works; the submodules are imported on
first use, so importing the package stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "CheckpointError",
    "Checkpointer",
    "IncompatibleKeys",
    "convert_official_to_ours",
    "convert_ours_to_official",
    "load_checkpoint_file",
    "load_official",
    "resolve_weights",
]

_LAZY = {
    "CheckpointError": "checkpointer",
    "Checkpointer": "checkpointer",
    "resolve_weights": "checkpointer",
    "IncompatibleKeys": "official",
    "convert_official_to_ours": "official",
    "convert_ours_to_official": "official",
    "load_checkpoint_file": "official",
    "load_official": "official",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
