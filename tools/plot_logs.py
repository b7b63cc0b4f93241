#!/usr/bin/env python
"""Plot loss curves and AP from one or more metrics.json files to a PNG.

A thin wrapper over :mod:`mrdetr.tools.plot_logs` (``--help`` lists every flag).
"""

from __future__ import annotations

from mrdetr.tools._cli import run_cli
from mrdetr.tools.plot_logs import main

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
