"""Shared command-line helpers: one clear error line and a non-zero exit for expected failures."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

__all__ = ["EXPECTED_ERRORS", "run_cli"]

# Errors that come from bad user input (missing files, bad values): printed as one line.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    KeyError,
    RuntimeError,
)
_EXIT_FAILURE = 1


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run ``main`` and turn an expected error into ``error: <message>`` on stderr and exit code 1."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return main(argv)
    except EXPECTED_ERRORS as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        return _EXIT_FAILURE
