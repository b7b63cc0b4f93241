#!/usr/bin/env python
"""Train or evaluate a Mr. DETR model from a LazyConfig file.

    python projects/train_net.py --config-file CFG [--num-gpus N] [--resume] [--eval-only] [key=value ...]

All logic lives in :mod:`mrdetr.engine.runner`; this script only parses arguments and launches
(through :func:`mrdetr.tools.train_net.main`, which is also the ``mrdetr-train`` command).
"""

from __future__ import annotations

from mrdetr.tools.train_net import main

if __name__ == "__main__":
    raise SystemExit(main())
