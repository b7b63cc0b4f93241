#!/usr/bin/env python
"""Train or evaluate a Mr. DETR model from a LazyConfig file.

    python projects/train_net.py --config-file CFG [--num-gpus N] [--resume] [--eval-only] [key=value ...]

All logic lives in :mod:`mrdetr.engine.runner`; this script only parses arguments and launches.
"""

from __future__ import annotations

from mrdetr.engine import default_argument_parser, launch
from mrdetr.engine.runner import main

if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
