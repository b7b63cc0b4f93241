#!/usr/bin/env python
"""Model mean of a 24-epoch run: weights 0.8/0.1/0.05/0.05 of iterations 179999/149999/119999/89999.

    python projects/modelmean_24ep.py -n/--folder DIR [--ema] [--output meanmodel.pth]

A thin wrapper over :mod:`mrdetr.tools.model_mean` (which takes any --iters/--weights).
"""

from __future__ import annotations

from functools import partial

from mrdetr.tools._cli import run_cli
from mrdetr.tools.model_mean import main

ITERS = "179999,149999,119999,89999"
WEIGHTS = "0.8,0.1,0.05,0.05"

if __name__ == "__main__":
    raise SystemExit(run_cli(partial(main, defaults=(ITERS, WEIGHTS))))
