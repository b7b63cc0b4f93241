"""Train or evaluate a Mr. DETR model from a LazyConfig file (``mrdetr-train``).

    mrdetr-train --config-file CFG [--num-gpus N] [--resume] [--eval-only] [key=value ...]
    python -m mrdetr.tools.train_net ...   # the same
    python projects/train_net.py ...       # the same, from a source checkout

The flags are those of :func:`mrdetr.engine.default_argument_parser`; all training logic lives in
:mod:`mrdetr.engine.runner`, this module only parses arguments and launches the processes. The
project's own errors (config, data, checkpoint, divergence, a full disk) are printed as one
``error:`` line plus a ``hint:`` line, with exit status 2 (:func:`mrdetr.tools._cli.run_reporting_errors`);
``--traceback`` or ``MRDETR_DEBUG=1`` shows their full traceback. Any other exception keeps its
traceback. A training stopped by a signal (``train.stop_signals``) prints one ``stopped:`` line
and exits with 128 + the signal's number.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from torch.multiprocessing import ProcessExitedException

from mrdetr.engine import default_argument_parser, launch
from mrdetr.engine.defaults import dist_backend_for
from mrdetr.engine.runner import main as run_main

from ._cli import USER_ERROR_EXIT, ErrorReportedByWorker, report_in_worker, run_reporting_errors

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), launch :func:`mrdetr.engine.runner.main`.

    Returns:
        0 when every process finished, 2 after one of the project's own errors (printed as an
        ``error:`` and a ``hint:`` line, by the worker process that hit it when several run),
        128 + the signal's number after a training stopped by SIGTERM or Ctrl-C with a checkpoint
        (``train.stop_signals``; one ``stopped:`` line).
    """
    args = default_argument_parser().parse_args(argv)
    several = args.num_gpus * args.num_machines > 1
    return run_reporting_errors(
        lambda: _launch(
            _run_main_reporting_errors if several else run_main,
            args,
            # one process needs no group: "auto", without reading the config here
            backend=dist_backend_for(args.config_file, args.opts) if several else "auto",
        ),
        traceback=args.traceback,
    )


def _launch(
    main_func: Callable[[argparse.Namespace], Any], args: argparse.Namespace, *, backend: str
) -> None:
    try:
        launch(
            main_func,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
            backend=backend,
        )
    except ProcessExitedException as exc:
        if exc.exit_code == USER_ERROR_EXIT:  # the worker printed its error (report_in_worker)
            raise ErrorReportedByWorker() from None
        raise


def _run_main_reporting_errors(args: argparse.Namespace) -> None:
    """The entry point of each worker process of a multi-process run."""
    report_in_worker(lambda: run_main(args), traceback=args.traceback)


if __name__ == "__main__":
    raise SystemExit(main())
