"""Standard trainer hooks: timer, LR scheduler, checkpointing, evaluation, writers.

``EMAHook`` lives in :mod:`mrdetr.engine.ema` and is re-exported here.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from mrdetr.checkpoint.checkpointer import Checkpointer
from mrdetr.engine.ema import EMAHook
from mrdetr.engine.train_loop import HookBase
from mrdetr.utils import comm
from mrdetr.utils.env import capture_rng_state
from mrdetr.utils.events import EventWriter

__all__ = [
    "EMAHook",
    "EvalHook",
    "IterationTimer",
    "LRScheduler",
    "PeriodicCheckpointer",
    "PeriodicWriter",
]

logger = logging.getLogger(__name__)


class IterationTimer(HookBase):
    """Record the wall time of each iteration as ``time`` and log the total at the end.

    Register it first so its timing includes the other hooks.

    Args:
        warmup_iter: iterations at the start excluded from the timing statistics.
    """

    def __init__(self, warmup_iter: int = 3) -> None:
        self._warmup_iter = warmup_iter
        self._step_start = 0.0
        self._train_start = 0.0
        self._timed_iters = 0
        self._timed_seconds = 0.0

    def before_train(self) -> None:
        self._train_start = time.perf_counter()

    def before_step(self) -> None:
        self._step_start = time.perf_counter()

    def after_step(self) -> None:
        elapsed = time.perf_counter() - self._step_start
        if self.trainer.iter >= self.trainer.start_iter + self._warmup_iter:
            self.trainer.storage.put_scalar("time", elapsed)
            self._timed_iters += 1
            self._timed_seconds += elapsed

    def after_train(self) -> None:
        total = time.perf_counter() - self._train_start
        if self._timed_iters > 0:
            logger.info(
                "Overall training speed: %d iterations in %s (%.4f s / it)",
                self._timed_iters,
                datetime.timedelta(seconds=int(self._timed_seconds)),
                self._timed_seconds / self._timed_iters,
            )
        logger.info("Total training time: %s", datetime.timedelta(seconds=int(total)))


class LRScheduler(HookBase):
    """Step an LR scheduler (e.g. :class:`mrdetr.solver.LRMultiplier`) after every iteration.

    Args:
        scheduler: the scheduler; stepped once per optimizer step.
    """

    def __init__(self, scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
        self.scheduler = scheduler

    def after_step(self) -> None:
        self.scheduler.step()


class PeriodicCheckpointer(HookBase):
    """Save ``model_{iter:07d}.pth`` when ``(iter + 1) % period == 0`` and ``model_final.pth``.

    Every rank must run this hook (per-rank RNG states are gathered collectively; only the main
    process writes). A failed iteration never reaches ``after_step``, so nothing is saved for it.

    Args:
        checkpointer: the :class:`Checkpointer`.
        period: checkpoint period in iterations (<= 0: only the final checkpoint).
        max_iter: total iterations (default: the trainer's).
        max_to_keep: keep at most this many periodic files (oldest removed first;
            ``model_final.pth`` is never removed). ``None`` keeps all.
        file_prefix: file name prefix.
    """

    def __init__(
        self,
        checkpointer: Checkpointer,
        period: int,
        max_iter: int | None = None,
        max_to_keep: int | None = None,
        file_prefix: str = "model",
    ) -> None:
        if max_to_keep is not None and max_to_keep < 1:
            raise ValueError(
                f"PeriodicCheckpointer: max_to_keep={max_to_keep} must be >= 1 or None."
            )
        self.checkpointer = checkpointer
        self.period = int(period)
        self.max_iter = max_iter
        self.max_to_keep = max_to_keep
        self.file_prefix = file_prefix
        self._periodic_re = re.compile(rf"^{re.escape(file_prefix)}_(\d{{7}})\.pth$")

    def before_train(self) -> None:
        if self.max_iter is None:
            self.max_iter = self.trainer.max_iter
        self._saved_iter: int | None = None

    def _save(self, name: str, iteration: int) -> None:
        extra: dict[str, Any] = {"iteration": iteration}
        if comm.get_world_size() > 1:
            extra["rng_per_rank"] = comm.all_gather(capture_rng_state())
        self.checkpointer.save(name, **extra)
        self._saved_iter = iteration

    def save_now(self) -> str:
        """Checkpoint the iteration that just finished, unless this hook already did.

        Every rank must call it (like :meth:`after_step`). The file is the periodic one,
        ``model_{iter:07d}.pth`` (``model_final.pth`` after the last iteration), so ``--resume``
        continues from it exactly as from a periodic checkpoint.

        Returns:
            The checkpoint's file name.
        """
        iteration = self.trainer.iter
        name = self._final_name if self._is_last(iteration) else self._periodic_name(iteration)
        if self._saved_iter != iteration:
            self._save(name, iteration)
            self._prune()
        return f"{name}.pth"

    def after_step(self) -> None:
        iteration = self.trainer.iter
        if self.period > 0 and (iteration + 1) % self.period == 0:
            self._save(self._periodic_name(iteration), iteration)
            self._prune()
        if self._is_last(iteration):
            self._save(self._final_name, iteration)

    def _periodic_name(self, iteration: int) -> str:
        return f"{self.file_prefix}_{iteration:07d}"

    @property
    def _final_name(self) -> str:
        return f"{self.file_prefix}_final"

    def _is_last(self, iteration: int) -> bool:
        return self.max_iter is not None and iteration >= self.max_iter - 1

    def _prune(self) -> None:
        save_dir = self.checkpointer.save_dir
        if self.max_to_keep is None or not self.checkpointer.save_to_disk or not save_dir:
            return
        periodic = sorted(
            (int(match.group(1)), name)
            for name in os.listdir(save_dir)
            if (match := self._periodic_re.match(name))
        )
        for _, name in periodic[: -self.max_to_keep]:
            os.remove(os.path.join(save_dir, name))


class EvalHook(HookBase):
    """Run ``eval_function()`` every ``eval_period`` iterations and after the last one.

    The returned (nested) dict of numbers is flattened (``bbox/AP``) into the event storage at
    detectron2's iterations: an evaluation after step ``k`` (0-based) is recorded at ``k``, the one
    after training at ``max_iter``, and the one before training (``eval_before_train``) at
    ``start_iter - 1``. All ranks must run it (evaluation is usually distributed).

    Args:
        eval_period: period in iterations (<= 0: only after training).
        eval_function: callable returning ``{task: {metric: value}}`` or ``None``.
        eval_after_train: also evaluate when training completes.
        eval_before_train: also evaluate before the first step.
        after_eval: called once the results are in the storage (the runner passes
            :meth:`PeriodicWriter.write_all`, so an evaluation reaches ``metrics.json`` at once and
            survives a process killed before the next log period).
    """

    def __init__(
        self,
        eval_period: int,
        eval_function: Callable[[], Mapping[str, Any] | None],
        eval_after_train: bool = True,
        eval_before_train: bool = False,
        after_eval: Callable[[], None] | None = None,
    ) -> None:
        self._after_eval = after_eval
        self._period = int(eval_period)
        self._func = eval_function
        self._eval_after_train = eval_after_train
        self._eval_before_train = eval_before_train

    @staticmethod
    def _flatten(results: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
        flat: dict[str, float] = {}
        for key, value in results.items():
            name = f"{prefix}{key}"
            if isinstance(value, Mapping):
                flat.update(EvalHook._flatten(value, name + "/"))
            else:
                try:
                    flat[name] = float(value)
                except (TypeError, ValueError) as exc:
                    raise ValueError(
                        f"EvalHook: eval_function returned a non-numeric value for '{name}': "
                        f"{value!r}."
                    ) from exc
        return flat

    def _do_eval(self, cur_iter: int | None = None) -> None:
        results = self._func()
        if results:
            if not isinstance(results, Mapping):
                raise TypeError(f"EvalHook: eval_function must return a dict, got {type(results)}.")
            flat = self._flatten(results)
            self.trainer.storage.put_scalars(**flat, smoothing_hint=False, cur_iter=cur_iter)
            if self._after_eval is not None:
                self._after_eval()
        comm.synchronize()  # keep ranks together (evaluation may be uneven)

    def before_train(self) -> None:
        if self._eval_before_train:
            logger.info("Evaluating before training (train.eval_at_start=True).")
            self._do_eval(cur_iter=self.trainer.start_iter - 1)

    def after_step(self) -> None:
        next_iter = self.trainer.iter + 1
        if (
            self._period > 0
            and next_iter % self._period == 0
            and next_iter != self.trainer.max_iter
        ):
            self._do_eval()

    def after_train(self) -> None:
        # trainer.iter == max_iter only when every iteration finished
        if self._eval_after_train and self.trainer.iter >= self.trainer.max_iter:
            self._do_eval()
        del self._func  # may hold references to the model and data


class PeriodicWriter(HookBase):
    """Call ``writer.write()`` every ``period`` iterations, at the last one, and at the end.

    Args:
        writers: the :class:`EventWriter` objects.
        period: write period in iterations.
    """

    def __init__(self, writers: Sequence[EventWriter], period: int = 20) -> None:
        for writer in writers:
            if not isinstance(writer, EventWriter):
                raise TypeError(f"PeriodicWriter: {writer!r} is not an EventWriter.")
        self._writers = list(writers)
        self._period = int(period)

    def write_all(self) -> None:
        """Write every writer now (e.g. right after an evaluation)."""
        for writer in self._writers:
            writer.write()

    def after_step(self) -> None:
        if (
            self.trainer.iter + 1
        ) % self._period == 0 or self.trainer.iter == self.trainer.max_iter - 1:
            self.write_all()

    def after_train(self) -> None:
        for writer in self._writers:
            writer.write()  # flush metrics of the last iterations (e.g. after an exception)
            writer.close()
