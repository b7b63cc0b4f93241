"""Shared command-line helpers: one clear error line and a non-zero exit for expected failures.

Tools (``run_cli``) print ``error: <message>`` for the usual bad-input errors and exit 1.
``projects/train_net.py`` (``run_reporting_errors``) prints the project's own errors (config, data,
checkpoint, divergence, a failed write) as ``error: <message>`` plus a ``hint:`` line and exits 2;
any other exception keeps its traceback. ``MRDETR_DEBUG=1`` (or train_net's ``--traceback``) shows
the full traceback of every error.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

__all__ = [
    "DEBUG_ENV",
    "EXPECTED_ERRORS",
    "ErrorReportedByWorker",
    "USER_ERROR_EXIT",
    "debug_requested",
    "report_in_worker",
    "run_cli",
    "run_reporting_errors",
    "user_error_hint",
]

# Errors that come from bad user input (missing files, bad values): printed as one line.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    KeyError,
    RuntimeError,
)
_EXIT_FAILURE = 1
USER_ERROR_EXIT = 2
DEBUG_ENV = "MRDETR_DEBUG"
_TRACEBACK_NOTE = "run with --traceback or MRDETR_DEBUG=1 for the full traceback"
_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def debug_requested() -> bool:
    """Whether ``MRDETR_DEBUG`` asks for full tracebacks (any value but ``""``/``0``)."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _message(exc: BaseException) -> str:
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run ``main`` and turn an expected error into ``error: <message>`` on stderr and exit code 1."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return main(argv)
    except EXPECTED_ERRORS as exc:
        if debug_requested():
            raise
        print(f"error: {_message(exc)}", file=sys.stderr)
        return _EXIT_FAILURE


def _user_error_kinds() -> dict[type[BaseException], str]:
    """The project's own error classes, each with the hint printed under its message."""
    from ..checkpoint.checkpointer import CheckpointError
    from ..config import ConfigKeyError, ConfigLoadError, ConfigValueError, InstantiationError
    from ..data.detection_utils import BadImageError
    from ..data.validation import DataConfigError
    from ..utils.video import VideoError

    config_hint = "check the config file and the key=value overrides"
    return {
        ConfigKeyError: config_hint,
        ConfigValueError: config_hint,
        ConfigLoadError: "fix the config file named above (or one it imports)",
        InstantiationError: "check the arguments of the config node named above and the data "
        "paths (MRDETR_DATASETS / DETECTRON2_DATASETS)",
        CheckpointError: "check train.init_checkpoint and the checkpoints in train.output_dir",
        BadImageError: "check the dataset's image folder and file names "
        "(MRDETR_DATASETS / DETECTRON2_DATASETS)",
        VideoError: "check the video file",
        DataConfigError: "make the config key named above match the dataset",
        FloatingPointError: "lower optimizer.lr, keep train.clip_grad enabled, or set "
        "train.nan_policy=skip to drop such iterations",
    }


def user_error_hint(exc: BaseException) -> str | None:
    """The hint for one of the project's own errors, or ``None`` for an unexpected exception.

    A failed write of a named file (``OSError`` with an errno and a file name, e.g. a full disk)
    counts as the user's: its message names the path and the errno.
    """
    for kind, hint in _user_error_kinds().items():
        if isinstance(exc, kind):
            return hint
    if isinstance(exc, OSError) and exc.errno is not None and exc.filename:
        if exc.errno in _DISK_ERRNOS:
            return "free disk space or choose another train.output_dir"
        return "check the path and its permissions"
    return None


class ErrorReportedByWorker(Exception):
    """A spawned worker process printed one of the project's errors (``error:`` and ``hint:``
    lines, :func:`report_in_worker`) and left with ``USER_ERROR_EXIT``; nothing is left to print."""


def _hint_or_reraise(exc: BaseException, traceback: bool) -> str:
    """The hint for ``exc``, one of the project's errors; re-raise the exception being handled
    (call this in its ``except`` block) when it is not one, or when a traceback is asked for."""
    hint = user_error_hint(exc)
    if hint is None or traceback or debug_requested():
        # keep the traceback in the run's log.txt too (the trainer logs one line only)
        logging.getLogger("mrdetr").error("Traceback of the error below:", exc_info=True)
        raise  # noqa: PLE0704 - called from the except block of the exception
    return hint


def _print_user_error(exc: BaseException, hint: str) -> None:
    # one write, flushed: the workers of a multi-process run share the stderr pipe, and a single
    # write of less than PIPE_BUF bytes is not interleaved with another process's
    sys.stderr.write(f"error: {_message(exc)}\nhint: {hint} ({_TRACEBACK_NOTE})\n")
    sys.stderr.flush()


def run_reporting_errors(
    func: Callable[[], Any], *, traceback: bool = False, exit_code: int = USER_ERROR_EXIT
) -> int:
    """Run ``func()``; print one of our errors as ``error:`` and ``hint:`` lines.

    Args:
        func: the command's body.
        traceback: re-raise every error (full traceback), as ``MRDETR_DEBUG=1`` does.
        exit_code: the status returned for the project's own errors.

    Returns:
        0 after success, ``exit_code`` after one of our errors (also one that a spawned worker
        printed itself: :class:`ErrorReportedByWorker`), 128 + the signal's number after a
        training stopped by a signal (:class:`~mrdetr.engine.train_loop.TrainingStopped`, printed
        as one ``stopped:`` line); other exceptions propagate.
    """
    from ..engine.train_loop import TrainingStopped

    try:
        func()
    except TrainingStopped as stop:  # not an error: a checkpoint was written, --resume goes on
        print(f"stopped: {stop}", file=sys.stderr)
        return stop.exit_code
    except ErrorReportedByWorker:
        return exit_code
    except Exception as exc:
        _print_user_error(exc, _hint_or_reraise(exc, traceback))
        return exit_code
    return 0


def report_in_worker(func: Callable[[], Any], *, traceback: bool = False) -> None:
    """Run ``func()`` in a spawned worker process: print one of the project's errors there, as
    :func:`run_reporting_errors` does, and leave with ``USER_ERROR_EXIT`` (the parent's launcher
    sees the status, not the exception); a stop (``TrainingStopped``) and any other exception
    propagate, the latter with its traceback."""
    from ..engine.train_loop import TrainingStopped

    try:
        func()
    except TrainingStopped:  # not an error: the launcher's worker turns it into its exit status
        raise
    except Exception as exc:
        _print_user_error(exc, _hint_or_reraise(exc, traceback))
        raise SystemExit(USER_ERROR_EXIT) from None
