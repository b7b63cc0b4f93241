#!/usr/bin/env python
"""Model mean of a 12-epoch run: weights 0.8/0.15/0.05 of iterations 89999/29999/59999.

    python projects/modelmean_12ep.py -n/--folder DIR [--ema] [--output meanmodel.pth]

A thin wrapper over :mod:`mrdetr.tools.model_mean` (which takes any --iters/--weights).
"""

from __future__ import annotations

from functools import partial

from mrdetr.tools._cli import run_cli
from mrdetr.tools.model_mean import main

ITERS = "89999,29999,59999"
WEIGHTS = "0.8,0.15,0.05"

if __name__ == "__main__":
    raise SystemExit(run_cli(partial(main, defaults=(ITERS, WEIGHTS))))
