#!/usr/bin/env python
"""Route diagnostics of a checkpoint (per-route AP raw and after NMS, duplicates, one-to-many positives).

A thin wrapper over :mod:`mrdetr.tools.route_report` (``--help`` lists every flag).
"""

from __future__ import annotations

from mrdetr.tools._cli import run_cli
from mrdetr.tools.route_report import main

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
