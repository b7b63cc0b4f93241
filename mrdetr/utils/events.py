"""Training-time metric storage and writers (console, JSON lines, TensorBoard).

The trainer opens an :class:`EventStorage`; anything running inside it (model, hooks) can call
:func:`get_event_storage` and ``put_scalar``. Writers read the storage periodically.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from fvcore.common.history_buffer import HistoryBuffer

from .route_losses import LOSS_PREFIX, route_totals

__all__ = [
    "CommonMetricPrinter",
    "EventStorage",
    "EventWriter",
    "JSONWriter",
    "TensorboardXWriter",
    "current_event_storage",
    "get_event_storage",
]

_CURRENT_STORAGE_STACK: list[EventStorage] = []
_ETA_WINDOW = 1000  # iterations whose median time predicts the remaining ones
_BYTES_PER_MIB = 1024 * 1024


def get_event_storage() -> EventStorage:
    """Return the innermost active :class:`EventStorage`.

    Raises:
        RuntimeError: when called outside ``with EventStorage(...)``.
    """
    if not _CURRENT_STORAGE_STACK:
        raise RuntimeError(
            "get_event_storage() has to be called inside a 'with EventStorage(...)' context "
            "(the trainer opens one in Trainer.train)."
        )
    return _CURRENT_STORAGE_STACK[-1]


def current_event_storage() -> EventStorage | None:
    """The innermost active :class:`EventStorage`, or None outside a trainer (e.g. in a test or an
    evaluation script), for code that records optional statistics."""
    return _CURRENT_STORAGE_STACK[-1] if _CURRENT_STORAGE_STACK else None


class EventStorage:
    """Per-iteration scalar metrics with history, usable as a context manager.

    Args:
        start_iter: value of :attr:`iter` when the storage is created.
        max_history: number of values kept per metric (older ones are dropped).
    """

    def __init__(self, start_iter: int = 0, *, max_history: int = 1_000_000) -> None:
        self._history: dict[str, HistoryBuffer] = defaultdict(
            lambda: HistoryBuffer(max_length=max_history)
        )
        self._smoothing_hints: dict[str, bool] = {}
        self._latest_scalars: dict[str, tuple[float, int]] = {}
        self._iter = int(start_iter)
        self._current_prefix = ""

    # ------------------------------------------------------------------ writing
    def put_scalar(
        self,
        name: str,
        value: float | torch.Tensor,
        smoothing_hint: bool = True,
        cur_iter: int | None = None,
    ) -> None:
        """Record one scalar for the current (or given) iteration.

        Args:
            name: metric name (prefixed by the active :meth:`name_scope`).
            value: a Python number or a one-element tensor.
            smoothing_hint: whether writers should report a windowed median instead of the
                latest value. Must stay the same for a given name.
            cur_iter: iteration to record under; defaults to :attr:`iter`.
        """
        name = self._current_prefix + name
        cur_iter = self._iter if cur_iter is None else int(cur_iter)
        value = float(value.detach().item() if isinstance(value, torch.Tensor) else value)
        self._history[name].update(value, cur_iter)
        self._latest_scalars[name] = (value, cur_iter)
        existing_hint = self._smoothing_hints.get(name)
        if existing_hint is not None and existing_hint != smoothing_hint:
            raise ValueError(
                f"EventStorage: scalar '{name}' was put with smoothing_hint={existing_hint} "
                f"before and with smoothing_hint={smoothing_hint} now; it must not change."
            )
        self._smoothing_hints[name] = smoothing_hint

    def put_scalars(
        self, *, smoothing_hint: bool = True, cur_iter: int | None = None, **kwargs: Any
    ) -> None:
        """Record several scalars at once, e.g. ``put_scalars(loss_a=1.0, loss_b=2.0)``."""
        for name, value in kwargs.items():
            self.put_scalar(name, value, smoothing_hint=smoothing_hint, cur_iter=cur_iter)

    # ------------------------------------------------------------------ reading
    def history(self, name: str) -> HistoryBuffer:
        """Return the :class:`HistoryBuffer` of ``name``.

        Raises:
            KeyError: when nothing was recorded under ``name``.
        """
        if name not in self._history:
            raise KeyError(
                f"EventStorage: no history for '{name}' (known: {sorted(self._history)})"
            )
        return self._history[name]

    def histories(self) -> dict[str, HistoryBuffer]:
        """All history buffers by name."""
        return dict(self._history)

    def latest(self) -> dict[str, tuple[float, int]]:
        """Map each name to ``(latest value, iteration it was recorded at)``."""
        return dict(self._latest_scalars)

    def latest_with_smoothing_hint(self, window_size: int = 20) -> dict[str, tuple[float, int]]:
        """Like :meth:`latest`, but smoothed names report the median of their last
        ``window_size`` recorded values."""
        result = {}
        for name, (value, itr) in self._latest_scalars.items():
            if self._smoothing_hints[name]:
                value = float(self._history[name].median(window_size))
            result[name] = (value, itr)
        return result

    def smoothing_hints(self) -> dict[str, bool]:
        """Map each name to its smoothing hint."""
        return dict(self._smoothing_hints)

    # ------------------------------------------------------------------ iteration
    @property
    def iter(self) -> int:
        """The current iteration (set by the trainer before each step)."""
        return self._iter

    @iter.setter
    def iter(self, value: int) -> None:
        self._iter = int(value)

    @contextmanager
    def name_scope(self, name: str) -> Iterator[None]:
        """Prefix every scalar put inside the block with ``name/``."""
        old_prefix = self._current_prefix
        self._current_prefix = f"{old_prefix}{name.rstrip('/')}/"
        try:
            yield
        finally:
            self._current_prefix = old_prefix

    def __enter__(self) -> EventStorage:
        _CURRENT_STORAGE_STACK.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if not _CURRENT_STORAGE_STACK or _CURRENT_STORAGE_STACK[-1] is not self:
            raise RuntimeError("EventStorage contexts must be exited in reverse order of entry.")
        _CURRENT_STORAGE_STACK.pop()


class EventWriter:
    """Base class of writers that read from the current :class:`EventStorage`."""

    def write(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release resources (files, handles). Default: nothing to do."""


class _NewScalarsMixin:
    """Tracks the last iteration written per scalar so each value is written once."""

    def _init_tracking(self, window_size: int) -> None:
        self._window_size = window_size
        self._last_write = -2  # an evaluation before training is recorded at iteration -1

    def _new_scalars(self, storage: EventStorage) -> dict[int, dict[str, float]]:
        by_iter: dict[int, dict[str, float]] = defaultdict(dict)
        hints = storage.smoothing_hints()
        for name, (value, itr) in storage.latest_with_smoothing_hint(self._window_size).items():
            if itr > self._last_write:
                by_iter[itr][name] = value
            if not hints[name]:  # unsmoothed values (AP, ...): every one since the last write
                values = storage.history(name).values()
                for i in range(len(values) - 2, -1, -1):  # newest first, the latest is done
                    old_value, old_itr = values[i]
                    if old_itr <= self._last_write:
                        break
                    by_iter[int(old_itr)].setdefault(name, float(old_value))
        if by_iter:
            self._last_write = max(by_iter)
        return dict(sorted(by_iter.items()))


class JSONWriter(_NewScalarsMixin, EventWriter):
    """Append one JSON object per iteration (``{"iteration": i, name: value, ...}``) to a file.

    Args:
        json_file: path of the JSON-lines file (appended to, so a resumed run continues it).
        window_size: median window for smoothed scalars.
    """

    def __init__(self, json_file: str | os.PathLike, window_size: int = 20) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(json_file)), exist_ok=True)
        self._file_handle = open(json_file, "a")  # noqa: SIM115 - closed in close()
        self._init_tracking(window_size)

    def write(self) -> None:
        storage = get_event_storage()
        for itr, scalars in self._new_scalars(storage).items():
            self._file_handle.write(
                json.dumps({"iteration": itr, **scalars}, sort_keys=True) + "\n"
            )
        self._file_handle.flush()
        try:
            os.fsync(self._file_handle.fileno())
        except OSError:  # e.g. a pipe or special file
            pass

    def close(self) -> None:
        self._file_handle.close()


class TensorboardXWriter(_NewScalarsMixin, EventWriter):
    """Write scalars to TensorBoard event files via ``torch.utils.tensorboard.SummaryWriter``.

    Args:
        log_dir: directory of the event files.
        window_size: median window for smoothed scalars.
        **kwargs: forwarded to ``SummaryWriter``.
    """

    def __init__(self, log_dir: str | os.PathLike, window_size: int = 20, **kwargs: Any) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(str(log_dir), **kwargs)
        self._init_tracking(window_size)

    def write(self) -> None:
        storage = get_event_storage()
        for itr, scalars in self._new_scalars(storage).items():
            for name, value in scalars.items():
                self._writer.add_scalar(name, value, itr)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class CommonMetricPrinter(EventWriter):
    """Log one short console line: ETA, iteration, total loss and one loss sum per route
    (``primary_loss``, ``instruct_loss``, ``sep_ffn_loss``), time, data time, lr and peak memory.

    Args:
        max_iter: total iterations, for the ETA; ``None`` hides the ETA.
        window_size: median window for losses and timings.
    """

    def __init__(self, max_iter: int | None = None, window_size: int = 20) -> None:
        self.logger = logging.getLogger("mrdetr.utils.events")
        self._max_iter = max_iter
        self._window_size = window_size
        self._last_write: tuple[int, float] | None = None  # (iteration, wall time)

    def _eta(self, storage: EventStorage) -> str | None:
        if self._max_iter is None:
            return None
        iteration = storage.iter
        remaining = self._max_iter - iteration - 1
        try:
            eta_seconds = storage.history("time").median(_ETA_WINDOW) * remaining
            storage.put_scalar("eta_seconds", eta_seconds, smoothing_hint=False)
            return str(datetime.timedelta(seconds=int(eta_seconds)))
        except KeyError:  # no "time" yet: estimate from wall clock between writes
            eta = None
            if self._last_write is not None:
                seconds_per_iter = (time.perf_counter() - self._last_write[1]) / max(
                    iteration - self._last_write[0], 1
                )
                eta = str(datetime.timedelta(seconds=int(seconds_per_iter * remaining)))
            self._last_write = (iteration, time.perf_counter())
            return eta

    def write(self) -> None:
        storage = get_event_storage()
        iteration = storage.iter
        if self._max_iter is not None and iteration == self._max_iter:
            return  # after training finished: nothing new to print
        histories = storage.histories()

        def fmt_time(key: str) -> str:
            if key not in histories:
                return ""
            return f"{key}: {histories[key].avg(self._window_size):.4f}  "

        # the total and one sum per route; every term stays in metrics.json and TensorBoard
        hints = storage.smoothing_hints()
        medians = {
            k: float(v.median(self._window_size))
            for k, v in histories.items()
            if "loss" in k and hints.get(k, True)
        }
        shown = {k: v for k, v in medians.items() if not k.startswith(LOSS_PREFIX)}
        shown.update({f"{route}_loss": v for route, v in route_totals(medians).items()})
        losses = "  ".join(f"{k}: {v:.4g}" for k, v in shown.items())
        lr = f"lr: {histories['lr'].latest():.5g}  " if "lr" in histories else ""
        max_mem = ""
        if torch.cuda.is_available():
            max_mem = f"max_mem: {torch.cuda.max_memory_allocated() / _BYTES_PER_MIB:.0f}M"
        eta = self._eta(storage)
        self.logger.info(
            f"{'eta: ' + eta + '  ' if eta else ''}iter: {iteration}  {losses}  "
            f"{fmt_time('time')}{fmt_time('data_time')}{lr}{max_mem}".rstrip()
        )
