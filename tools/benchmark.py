#!/usr/bin/env python
"""Inference speed (images/s, latency) of a model, or of the data loader alone.

A thin wrapper over :mod:`mrdetr.tools.benchmark` (``--help`` lists every flag).
"""

from __future__ import annotations

from mrdetr.tools._cli import run_cli
from mrdetr.tools.benchmark import main

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
