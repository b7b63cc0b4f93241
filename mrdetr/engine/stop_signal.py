"""Stop training cleanly on a signal: finish the iteration, write a checkpoint, then stop.

A preempted or cancelled job (a SLURM or Kubernetes job, a spot instance, Ctrl-C) gets a stop
signal some time before it is killed. :class:`StopOnSignal` turns the first such signal into a stop
at the end of the running iteration: that iteration's evaluation still runs if it is due, the
checkpoint ``model_{iter:07d}.pth`` is written (atomically, like the periodic ones) and becomes
``last_checkpoint``, and the hook raises :class:`~mrdetr.engine.train_loop.TrainingStopped`.
``--resume`` then continues from the next iteration exactly as from a periodic checkpoint, so no
finished iteration is lost. A second SIGINT (Ctrl-C twice) stops at once without a checkpoint;
further SIGTERMs are ignored while the checkpoint is written.

The hook takes over a signal only while its handler is the default one (none, or Python's Ctrl-C
handler): a launcher that handles the signal itself keeps it (submitit ignores SIGTERM). A
*chained* signal is taken over even so, and its own handler runs after the stop checkpoint is
written: the SLURM launcher chains submitit's preemption signal (SIGUSR2), whose handler requeues
the job, so a preempted job resumes from the iteration it was in rather than from the last periodic
checkpoint. With several processes the ranks agree after every iteration (one small all-gather),
so all of them stop after the same iteration even when only one rank got the signal.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from mrdetr.engine.hooks import PeriodicCheckpointer
from mrdetr.engine.train_loop import HookBase, TrainingStopped
from mrdetr.utils import comm

__all__ = ["DEFAULT_STOP_SIGNALS", "StopOnSignal", "has_default_handler"]

logger = logging.getLogger(__name__)

DEFAULT_STOP_SIGNALS = ("SIGTERM", "SIGINT")
_DEFAULT_HANDLERS = (signal.SIG_DFL, signal.default_int_handler)


def _signal_number(name: str) -> int:
    value = getattr(signal, str(name), None)
    if not isinstance(value, signal.Signals):
        raise ValueError(
            f"{name!r} is not a signal of this platform; expected names such as "
            f"{list(DEFAULT_STOP_SIGNALS)} (an empty list turns the stop off)."
        )
    return int(value)


def has_default_handler(signum: int) -> bool:
    """Whether nobody has taken over ``signum`` yet (its handler is none, or Python's Ctrl-C one).

    An ignored signal (``SIG_IGN``, e.g. SIGINT of a job started with ``&`` by a script) and a
    launcher's own handler do not count as default: they are left as they are.
    """
    return signal.getsignal(signum) in _DEFAULT_HANDLERS


def _say(text: str) -> None:
    """Write one line to stderr from a signal handler (no logging locks taken there)."""
    try:
        os.write(2, f"{text}\n".encode())
    except OSError:
        pass


class StopOnSignal(HookBase):
    """On the first of ``signals``, checkpoint the running iteration and stop training.

    Register it after the :class:`PeriodicCheckpointer` and the evaluation hook, so that an
    iteration's periodic checkpoint and evaluation are done before it stops.

    Args:
        checkpointer: the run's periodic checkpointer; its :meth:`PeriodicCheckpointer.save_now`
            writes the stop checkpoint (the same file names, pruning and atomic writes).
        signals: signal names, e.g. ``("SIGTERM", "SIGINT")``, taken over while nobody handles
            them; empty (and no ``chained``): the hook does nothing.
        chained: signal names taken over whatever their handler; after the stop checkpoint the
            handler found for that signal runs (then, if it returns, the stop).

    Raises:
        ValueError: a name that is not a signal of this platform.
    """

    def __init__(
        self,
        checkpointer: PeriodicCheckpointer,
        signals: Sequence[str] = DEFAULT_STOP_SIGNALS,
        chained: Sequence[str] = (),
    ) -> None:
        self.periodic = checkpointer
        self.chained = [_signal_number(name) for name in chained]
        self.signals = [_signal_number(name) for name in signals if name not in chained]
        self._previous: dict[int, Any] = {}
        self._previous_sigchld: Any = None
        self.requested: int | None = None

    # ---------------------------------------------------------------- handlers
    def before_train(self) -> None:
        self.requested = None
        if threading.current_thread() is not threading.main_thread():
            logger.info("Training runs outside the main thread: stop signals are not handled.")
            return
        for signum in self.signals:
            if has_default_handler(signum):
                self._previous[signum] = signal.signal(signum, self._handle)
            elif signal.getsignal(signum) == signal.SIG_IGN:
                logger.info("%s is ignored by this process: left so.", signal.Signals(signum).name)
            else:
                logger.info("%s already has a handler: left to it.", signal.Signals(signum).name)
        for signum in self.chained:
            self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested is None:
            self.requested = signum
            if hasattr(signal, "SIGCHLD"):
                # DataLoader workers may get the same signal and exit: their exit must not abort
                # the checkpoint (PyTorch's SIGCHLD handler raises for dead workers)
                self._previous_sigchld = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            again = " (Ctrl-C again stops at once, without it)" if signum == signal.SIGINT else ""
            _say(f"Received {name}: training stops after this iteration with a checkpoint{again}.")
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt
        else:
            _say(f"Received {name} again: still finishing the iteration and its checkpoint.")

    def _restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()
        if self._previous_sigchld is not None:
            signal.signal(signal.SIGCHLD, self._previous_sigchld)
            self._previous_sigchld = None

    # ---------------------------------------------------------------- hook
    def after_step(self) -> None:
        if not self.signals and not self.chained:
            return
        requested = self.requested
        if comm.get_world_size() > 1:
            asked = [signum for signum in comm.all_gather(requested) if signum is not None]
            requested = asked[0] if asked else None
        trainer = self.trainer
        if requested is None or trainer.iter >= trainer.max_iter - 1:
            return  # (the last iteration ends the run normally, with model_final.pth)
        checkpoint = self.periodic.save_now()
        comm.synchronize()  # no rank leaves (and ends the launch) before the file is written
        save_dir = self.periodic.checkpointer.save_dir
        stop = TrainingStopped(
            requested, trainer.iter, os.path.join(save_dir, checkpoint) if save_dir else checkpoint
        )
        chained = self._previous.get(requested) if requested in self.chained else None
        if callable(chained):
            logger.info("%s Now the %s handler found before training runs.", stop, stop.name)
            self._restore()
            chained(requested, None)  # e.g. submitit's: requeue the job, then exit
        raise stop

    def after_train(self) -> None:
        self._restore()
