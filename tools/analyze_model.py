#!/usr/bin/env python
"""Parameters per module and FLOPs (torch.utils.flop_counter) of the primary inference route.

A thin wrapper over :mod:`mrdetr.tools.analyze_model` (``--help`` lists every flag).
"""

from __future__ import annotations

from mrdetr.tools._cli import run_cli
from mrdetr.tools.analyze_model import main

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
