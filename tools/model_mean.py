#!/usr/bin/env python
"""Weighted average of a run's checkpoints (--folder DIR --iters ... --weights ...).

A thin wrapper over :mod:`mrdetr.tools.model_mean` (``--help`` lists every flag).
"""

from __future__ import annotations

from mrdetr.tools._cli import run_cli
from mrdetr.tools.model_mean import main

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
