#!/usr/bin/env python
"""Side-by-side pictures of predictions (results.json) and ground truth of a registered dataset.

A thin wrapper over :mod:`mrdetr.tools.visualize_json_results` (``--help`` lists every flag).
"""

from __future__ import annotations

from mrdetr.tools._cli import run_cli
from mrdetr.tools.visualize_json_results import main

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
