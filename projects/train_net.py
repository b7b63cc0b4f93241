#!/usr/bin/env python
"""Train or evaluate a Mr. DETR model from a LazyConfig file.

    python projects/train_net.py --config-file CFG [--num-gpus N] [--resume] [--eval-only] \
        [--traceback] [key=value ...]

All logic lives in :mod:`mrdetr.engine.runner`; this script only parses arguments and launches.
The project's own errors (config, data, checkpoint, divergence, a full disk) are printed as one
``error:`` line plus a ``hint:`` line, with exit status 2; ``--traceback`` or ``MRDETR_DEBUG=1``
shows their full traceback. Any other exception keeps its traceback.
"""

from __future__ import annotations

from mrdetr.engine import default_argument_parser, launch
from mrdetr.engine.runner import main
from mrdetr.tools._cli import run_reporting_errors

if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    raise SystemExit(
        run_reporting_errors(
            lambda: launch(
                main,
                args.num_gpus,
                num_machines=args.num_machines,
                machine_rank=args.machine_rank,
                dist_url=args.dist_url,
                args=(args,),
            ),
            traceback=args.traceback,
        )
    )
