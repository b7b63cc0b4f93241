#!/usr/bin/env python
"""Train or evaluate a Mr. DETR model from a LazyConfig file.

    python projects/train_net.py --config-file CFG [--num-gpus N] [--resume] [--eval-only] \
        [--traceback] [key=value ...]

All logic lives in :mod:`mrdetr.engine.runner`; this script only parses arguments and launches
(through :func:`mrdetr.tools.train_net.main`, which is also the ``mrdetr-train`` command).
The project's own errors (config, data, checkpoint, divergence, a full disk) are printed as one
``error:`` line plus a ``hint:`` line, with exit status 2; ``--traceback`` or ``MRDETR_DEBUG=1``
shows their full traceback. Any other exception keeps its traceback.
"""

from __future__ import annotations

from mrdetr.tools.train_net import main

if __name__ == "__main__":
    raise SystemExit(main())
