"""The ``metrics.json`` record of an ``--eval-only`` run.

Training runs record their AP through :class:`~mrdetr.engine.hooks.EvalHook`; an evaluation-only
run appends one line to the same JSON-lines file: the flattened results (``bbox/AP``, ...), the
evaluated checkpoint and, for one of our training checkpoints, the iteration it was saved at
(else ``-1``), so ``mrdetr-plot-logs`` and other readers of ``metrics.json`` take it as any record.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

__all__ = ["checkpoint_iteration", "write_eval_only_metrics"]

logger = logging.getLogger(__name__)

UNKNOWN_ITERATION = -1


def checkpoint_iteration(path: str) -> int:
    """The ``iteration`` stored in one of our training checkpoints, else :data:`UNKNOWN_ITERATION`.

    The file is memory-mapped (``weights_only``), so only its small entries are read.
    """
    import torch

    from mrdetr.checkpoint.checkpointer import resolve_weights

    try:
        data = torch.load(resolve_weights(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - an official or foreign file: the iteration is unknown
        return UNKNOWN_ITERATION
    value = data.get("iteration") if isinstance(data, Mapping) else None
    return int(value) if isinstance(value, int) else UNKNOWN_ITERATION


def write_eval_only_metrics(path: str, results: Mapping[str, Any], checkpoint: str) -> None:
    """Append ``{"iteration", "eval_only": true, "checkpoint", <flattened results>}`` to ``path``.

    Nothing is written for empty results (a config without an evaluator).
    """
    from .hooks import EvalHook

    if not results:
        return
    iteration = checkpoint_iteration(checkpoint) if checkpoint else UNKNOWN_ITERATION
    record = {"iteration": iteration, "eval_only": True, "checkpoint": str(checkpoint)}
    record.update(EvalHook._flatten(results))  # the keys training runs record
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
    logger.info("Evaluation results appended to %s", path)
