"""Logging setup: console + file handlers, rank-aware, idempotent."""

from __future__ import annotations

import copy
import functools
import logging
import os
import sys

__all__ = ["format_table", "setup_logger"]

_FORMAT = "[%(asctime)s] %(name)s %(levelname)s: %(message)s"
_DATE_FORMAT = "%m/%d %H:%M:%S"
_LOG_FILE_NAME = "log.txt"


class _ColorfulFormatter(logging.Formatter):
    """Shorten the root name and colour warnings/errors on a terminal."""

    _WARNING = "\x1b[31m"  # red
    _RESET = "\x1b[0m"

    def __init__(self, *args, root_name: str, abbrev_name: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._root_name = root_name + "."
        self._abbrev_name = abbrev_name + "." if abbrev_name else ""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging API
        record = copy.copy(record)  # other handlers must still see the full name
        record.name = record.name.replace(self._root_name, self._abbrev_name)
        log = super().formatMessage(record)
        if record.levelno >= logging.WARNING:
            return f"{self._WARNING}{record.levelname}{self._RESET} {log}"
        return log


@functools.lru_cache  # calling twice with the same arguments must not add handlers twice
def setup_logger(
    output: str | None = None,
    distributed_rank: int = 0,
    *,
    color: bool = True,
    name: str = "mrdetr",
    abbrev_name: str | None = None,
) -> logging.Logger:
    """Configure the ``name`` logger: console on rank 0 (INFO), warnings only elsewhere.

    Args:
        output: a file name ending in ``.txt``/``.log``, or a directory (then ``log.txt`` inside
            it). Rank 0 logs everything there, DEBUG included (e.g. the model printout); rank
            ``r > 0`` writes ``<file>.rank{r}`` with warnings and above only. ``None`` disables
            file logging.
        distributed_rank: the process' global rank.
        color: colour warnings on the console.
        name: logger name (its children inherit the handlers).
        abbrev_name: shorter name shown in messages (defaults to ``name``).

    Returns:
        The configured logger.
    """
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    abbrev_name = name if abbrev_name is None else abbrev_name
    plain = logging.Formatter(_FORMAT, datefmt=_DATE_FORMAT)
    main_rank = distributed_rank == 0
    console = logging.StreamHandler(stream=sys.stdout)
    console.setLevel(logging.INFO if main_rank else logging.WARNING)
    use_color = color and sys.stdout.isatty()
    console.setFormatter(
        _ColorfulFormatter(_FORMAT, datefmt=_DATE_FORMAT, root_name=name, abbrev_name=abbrev_name)
        if use_color
        else plain
    )
    logger.addHandler(console)

    if output is not None:
        filename = (
            output if output.endswith((".txt", ".log")) else os.path.join(output, _LOG_FILE_NAME)
        )
        if distributed_rank > 0:
            filename = f"{filename}.rank{distributed_rank}"
        os.makedirs(os.path.dirname(os.path.abspath(filename)), exist_ok=True)
        file_handler = logging.FileHandler(filename, mode="a")
        file_handler.setLevel(logging.DEBUG if main_rank else logging.WARNING)
        file_handler.setFormatter(plain)
        logger.addHandler(file_handler)
    return logger


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain pipe table (markdown style), columns padded to their widest cell."""
    width = len(headers)
    rows = [row + [""] * (width - len(row)) for row in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])
