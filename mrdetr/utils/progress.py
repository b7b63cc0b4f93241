"""Progress bars that neither clutter log files nor interleave with log lines.

A bar is drawn only on an interactive terminal (its stream, stderr by default, is a TTY). Redirected
output (``nohup``, CI logs, ``> train_stdout.txt 2>&1``) gets no bar at all, so no carriage-return
redraws end up in files; the callers log their own progress lines at a fixed period instead. While a
bar is drawn, the console handlers of the ``mrdetr`` logger write through ``tqdm.write``, which
clears the bar, prints the line and redraws the bar below it.

Example::

    with progress_bar(total=len(loader), desc="inference") as bar:
        for batch in loader:
            ...
            bar.update(1)

    for path in track(paths, desc="images"):
        ...
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterable, Iterator
from typing import IO, TypeVar

from tqdm import tqdm

__all__ = ["progress_bar", "track"]

_T = TypeVar("_T")
_LOGGER_NAME = "mrdetr"


def _is_tty(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


class _BarAwareHandler(logging.Handler):
    """Writes like ``console`` (same stream, level, formatter), through ``tqdm.write``."""

    def __init__(self, console: logging.StreamHandler) -> None:
        super().__init__(level=console.level)
        self.setFormatter(console.formatter)
        for f in console.filters:
            self.addFilter(f)
        self._stream = console.stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self._stream)
        except Exception:  # logging's contract: report, never raise from a handler
            self.handleError(record)


def _is_console(handler: logging.Handler) -> bool:
    return type(handler) is logging.StreamHandler  # not its subclass FileHandler


@contextlib.contextmanager
def _logs_above_bar(logger: logging.Logger) -> Iterator[None]:
    """Route ``logger``'s console handlers through ``tqdm.write`` for the duration."""
    original = list(logger.handlers)
    logger.handlers = [_BarAwareHandler(h) if _is_console(h) else h for h in original]
    try:
        yield
    finally:
        logger.handlers = original


@contextlib.contextmanager
def progress_bar(
    total: int | None = None,
    desc: str | None = None,
    *,
    enabled: bool = True,
    stream: IO[str] | None = None,
) -> Iterator[tqdm]:
    """A tqdm bar on ``stream`` (default stderr), drawn only when it is a terminal.

    Args:
        total: expected number of updates (None: unknown).
        desc: the bar's prefix.
        enabled: False never draws (e.g. on non-main processes).
        stream: where the bar goes.

    Yields:
        The bar (a disabled one, whose ``update`` does nothing, when not drawn).
    """
    stream = sys.stderr if stream is None else stream
    drawn = enabled and _is_tty(stream)
    with tqdm(total=total, desc=desc, file=stream, disable=not drawn, dynamic_ncols=True) as bar:
        if not drawn:
            yield bar
            return
        with _logs_above_bar(logging.getLogger(_LOGGER_NAME)):
            yield bar


def track(
    iterable: Iterable[_T],
    desc: str | None = None,
    *,
    total: int | None = None,
    enabled: bool = True,
) -> Iterator[_T]:
    """Iterate ``iterable`` with a :func:`progress_bar` (``total`` defaults to its length)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with progress_bar(total=total, desc=desc, enabled=enabled) as bar:
        for item in iterable:
            yield item
            bar.update(1)
