"""The training loop: :class:`HookBase` and :class:`Trainer` (AMP, clipping, accumulation).

Iteration semantics: one trainer iteration is one optimizer step. With ``grad_accum_steps = k``
an iteration consumes ``k`` micro-batches from the data loader (forward + backward each, loss
divided by ``k``), then clips, steps the optimizer once and lets the hooks step the LR scheduler
once. ``max_iter``, checkpoint/eval periods and the LR schedule therefore all count optimizer
steps; the data loader advances ``k`` batches per iteration (resume fast-forwards
``start_iter * k`` batches).
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from mrdetr.solver.param_groups import largest_param_group
from mrdetr.utils import comm
from mrdetr.utils.events import EventStorage

__all__ = ["HookBase", "Trainer", "TrainingStopped", "build_grad_scaler"]

logger = logging.getLogger(__name__)

_AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
_NAN_POLICIES = ("stop", "skip")
SIGNAL_EXIT_BASE = 128  # a shell reports a process ended by signal N as status 128 + N


class TrainingStopped(Exception):
    """Training stopped on request (a stop signal) after a finished, checkpointed iteration.

    Not an error: the run can continue with ``--resume``. Raised by a hook's ``after_step``
    (:class:`mrdetr.engine.stop_signal.StopOnSignal`); the trainer runs ``after_train`` and
    re-raises it. The launcher of several worker processes raises it too, without the iteration
    and the checkpoint (each worker logged them).

    Args:
        signum: the signal that asked for the stop.
        iteration: the last finished iteration (0-based), if known.
        checkpoint: path of the checkpoint written for it, if known.
    """

    def __init__(self, signum: int, iteration: int | None = None, checkpoint: str = "") -> None:
        self.signum = signum
        self.iteration = iteration
        self.checkpoint = checkpoint
        self.name = name = signal.Signals(signum).name
        if iteration is None:
            where = "in every worker process, after the checkpoint of the last finished iteration"
            where += " (named in log.txt)"
        else:
            where = f"after iteration {iteration}; checkpoint {checkpoint}"
        super().__init__(f"Training stopped by {name} {where}. Continue with --resume.")

    @property
    def exit_code(self) -> int:
        """The shell's status of a process ended by this signal (128 + its number)."""
        return SIGNAL_EXIT_BASE + self.signum


class HookBase:
    """Base class of trainer hooks. ``self.trainer`` is set by :meth:`Trainer.register_hooks`.

    Call order: ``before_train``; per iteration ``before_step``, (inside ``run_step``)
    ``after_backward``, ``after_step``; finally ``after_train`` (also after an exception).
    """

    trainer: Trainer

    def before_train(self) -> None:
        """Called once before the first iteration."""

    def after_train(self) -> None:
        """Called once after the last iteration, or when training stops with an exception."""

    def before_step(self) -> None:
        """Called before each iteration."""

    def after_backward(self) -> None:
        """Called after the backward pass(es) of an iteration, before clipping and stepping."""

    def after_step(self) -> None:
        """Called after each iteration."""


def _amp_dtype(name: str) -> torch.dtype:
    if name not in _AMP_DTYPES:
        raise ValueError(
            f"amp_dtype={name!r} is not supported; expected one of {sorted(_AMP_DTYPES)}."
        )
    return _AMP_DTYPES[name]


def build_grad_scaler(
    *, amp_enabled: bool, amp_dtype: str, device_type: str
) -> torch.amp.GradScaler | None:
    """A ``GradScaler`` for fp16 AMP, ``None`` otherwise (bf16 and fp32 need no loss scaling)."""
    if amp_enabled and _amp_dtype(amp_dtype) == torch.float16:
        return torch.amp.GradScaler(device_type)
    return None


def _module_device_type(model: nn.Module) -> str:
    for tensor in model.parameters():
        return tensor.device.type
    return "cpu"


class Trainer:
    """Runs ``model`` on batches from ``data_loader`` and steps ``optimizer``, with hooks.

    Args:
        model: in training mode, ``model(batch)`` returns a dict of already-weighted losses.
        data_loader: an iterable of batches (usually infinite).
        optimizer: the optimizer.
        amp_enabled: run forward under ``torch.amp.autocast`` for the model's device type.
        amp_dtype: ``"float16"`` (with a ``GradScaler``) or ``"bfloat16"`` (no scaler; works
            on CPU).
        grad_clip_max_norm: clip the global gradient norm to this value (after AMP unscaling);
            ``None`` disables clipping. The official recipe uses 0.1.
        grad_clip_norm_type: norm type for clipping.
        grad_accum_steps: micro-batches per optimizer step (see the module docstring).
        nan_policy: what to do with a non-finite total loss, a ``FloatingPointError`` raised by
            the model's forward (the criterion raises one when outputs hold NaN/inf before
            matching), or, without a ``GradScaler``, non-finite gradients of a finite loss:
            ``"stop"`` raises ``FloatingPointError`` naming the iteration and the non-finite
            loss terms (or outputs) before the optimizer steps, so no checkpoint ever holds such
            weights; ``"skip"`` drops that iteration's update (logged as ``skipped_nonfinite``).
            The decision is shared by all ranks.
        grad_scaler: an existing scaler (e.g. one already registered with the checkpointer);
            default: built from ``amp_enabled``/``amp_dtype``.
    """

    def __init__(
        self,
        model: nn.Module,
        data_loader: Iterable[Any],
        optimizer: torch.optim.Optimizer,
        *,
        amp_enabled: bool = False,
        amp_dtype: str = "float16",
        grad_clip_max_norm: float | None = None,
        grad_clip_norm_type: float = 2.0,
        grad_accum_steps: int = 1,
        nan_policy: str = "stop",
        grad_scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        if grad_accum_steps < 1:
            raise ValueError(f"Trainer: grad_accum_steps={grad_accum_steps} must be >= 1.")
        if nan_policy not in _NAN_POLICIES:
            raise ValueError(
                f"Trainer: nan_policy={nan_policy!r}; expected one of {_NAN_POLICIES}."
            )
        if grad_clip_max_norm is not None and grad_clip_max_norm <= 0:
            raise ValueError(
                f"Trainer: grad_clip_max_norm={grad_clip_max_norm} must be positive or None."
            )
        self.model = model
        self.data_loader = data_loader
        self.optimizer = optimizer
        self.amp_enabled = amp_enabled
        self.amp_dtype = _amp_dtype(amp_dtype)
        self.device_type = _module_device_type(model)
        self.grad_scaler = grad_scaler or build_grad_scaler(
            amp_enabled=amp_enabled, amp_dtype=amp_dtype, device_type=self.device_type
        )
        self.grad_clip_max_norm = grad_clip_max_norm
        self.grad_clip_norm_type = grad_clip_norm_type
        self.grad_accum_steps = grad_accum_steps
        self.nan_policy = nan_policy
        self._hooks: list[HookBase] = []
        self._data_iter: Iterator[Any] | None = None
        self.iter = 0
        self.start_iter = 0
        self.max_iter = 0
        self.storage: EventStorage

    # ------------------------------------------------------------------ hooks
    def register_hooks(self, hooks: Sequence[HookBase | None]) -> None:
        """Append hooks (``None`` entries are ignored); they run in registration order."""
        for hook in hooks:
            if hook is None:
                continue
            if not isinstance(hook, HookBase):
                raise TypeError(f"Trainer.register_hooks: {hook!r} is not a HookBase.")
            # weakref avoids a trainer <-> hook reference cycle
            hook.trainer = weakref.proxy(self)
            self._hooks.append(hook)

    def _call_hooks(self, stage: str) -> None:
        for hook in self._hooks:
            getattr(hook, stage)()

    # ------------------------------------------------------------------ loop
    def train(self, start_iter: int, max_iter: int) -> None:
        """Run iterations ``start_iter .. max_iter - 1``.

        After a complete run ``self.iter == max_iter``; after an exception ``self.iter`` is the
        iteration that failed (hooks use this in ``after_train``).
        """
        logger.info("Starting training from iteration %d", start_iter)
        self.iter = self.start_iter = start_iter
        self.max_iter = max_iter
        with EventStorage(start_iter) as self.storage:
            try:
                self._call_hooks("before_train")
                for self.iter in range(start_iter, max_iter):
                    self.storage.iter = self.iter
                    self._call_hooks("before_step")
                    self.run_step()
                    self._call_hooks("after_step")
                self.iter += 1  # == max_iter: tells after_train the run completed
            except TrainingStopped as stop:
                logger.info("%s", stop)
                raise
            except Exception as exc:
                # one line: the command line decides whether the traceback is shown
                logger.error(
                    "Exception during training at iteration %d: %s: %s",
                    self.iter,
                    type(exc).__name__,
                    exc,
                )
                raise
            finally:
                self.storage.iter = self.iter
                self._call_hooks("after_train")

    def _next_batch(self) -> Any:
        if self._data_iter is None:
            self._data_iter = iter(self.data_loader)
        return next(self._data_iter)

    def _all_finite(self, total: torch.Tensor) -> bool:
        flag = torch.isfinite(total.detach()).to(torch.int32).reshape(1)
        if comm.get_world_size() > 1:
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        return bool(flag.item())

    def _nonfinite_message(self, loss_dict: Mapping[str, torch.Tensor], micro: int) -> str:
        bad = {k: float(v.detach().float().item()) for k, v in loss_dict.items()}
        bad = {k: v for k, v in bad.items() if not math.isfinite(v)}
        where = self._micro_batch_note(micro)
        if not bad:
            return f"Loss became non-finite on another rank at iteration {self.iter}{where}."
        terms = ", ".join(f"{k}={v}" for k, v in bad.items())
        return f"Loss became non-finite at iteration {self.iter}{where}: {terms}."

    def _nan_flag(self) -> torch.Tensor:
        device = next((p.device for p in self.model.parameters()), torch.device("cpu"))
        return torch.tensor(math.nan, device=device)

    def _micro_batch_note(self, micro: int) -> str:
        if self.grad_accum_steps == 1:
            return ""
        return f" (micro-batch {micro + 1}/{self.grad_accum_steps})"

    def _nonfinite_output_message(self, exc: FloatingPointError, micro: int) -> str:
        return (
            f"Model outputs became non-finite at iteration {self.iter}"
            f"{self._micro_batch_note(micro)}: {exc}."
        )

    def run_step(self) -> None:
        """One optimizer step over ``grad_accum_steps`` micro-batches."""
        if not self.model.training:
            raise RuntimeError("Trainer.run_step: the model is in eval mode; call model.train().")
        sums: dict[str, torch.Tensor] = {}
        data_time = 0.0
        self.optimizer.zero_grad(set_to_none=True)
        for micro in range(self.grad_accum_steps):
            start = time.perf_counter()
            batch = self._next_batch()
            data_time += time.perf_counter() - start
            last = micro == self.grad_accum_steps - 1
            no_sync = getattr(self.model, "no_sync", None)
            sync_ctx = contextlib.nullcontext() if last or no_sync is None else no_sync()
            with sync_ctx:
                try:
                    with torch.amp.autocast(
                        device_type=self.device_type,
                        dtype=self.amp_dtype,
                        enabled=self.amp_enabled,
                    ):
                        loss_dict = self.model(batch)
                except FloatingPointError as exc:  # e.g. non-finite outputs caught before matching
                    self._all_finite(self._nan_flag())  # the other ranks skip or stop too
                    self._on_nonfinite(self._nonfinite_output_message(exc, micro))
                    return
                if not isinstance(loss_dict, Mapping) or not loss_dict:
                    raise TypeError(
                        "Trainer: in training mode the model must return a non-empty dict of "
                        f"losses, got {type(loss_dict).__name__}."
                    )
                total = sum(loss_dict.values())
                if not self._all_finite(total):
                    self._on_nonfinite(self._nonfinite_message(loss_dict, micro))
                    return
                scaled = total / self.grad_accum_steps
                if self.grad_scaler is not None:
                    scaled = self.grad_scaler.scale(scaled)
                scaled.backward()
            for key, value in loss_dict.items():
                detached = value.detach().float()
                sums[key] = sums[key] + detached if key in sums else detached
        self._call_hooks("after_backward")
        if self.grad_scaler is not None:
            self.grad_scaler.unscale_(self.optimizer)
        grad_norm = self._clip_gradients()
        if self.grad_scaler is None and not self._gradients_finite(grad_norm, sums):
            return  # (fp16: the GradScaler itself skips steps with inf/NaN gradients)
        self.storage.put_scalar(
            "lr",
            self.optimizer.param_groups[largest_param_group(self.optimizer)]["lr"],
            smoothing_hint=False,
        )
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()
        self._write_metrics(sums, data_time, grad_norm)

    def _params_with_grad(self) -> list[torch.Tensor]:
        return [
            p
            for group in self.optimizer.param_groups
            for p in group["params"]
            if p.grad is not None
        ]

    def _clip_gradients(self) -> torch.Tensor | None:
        if self.grad_clip_max_norm is None:
            return None
        return nn.utils.clip_grad_norm_(
            self._params_with_grad(), self.grad_clip_max_norm, norm_type=self.grad_clip_norm_type
        )

    def _gradients_finite(
        self, grad_norm: torch.Tensor | None, sums: Mapping[str, torch.Tensor]
    ) -> bool:
        """Finite losses can still give inf/NaN gradients; never step (or save) with them.

        Gradients are already synchronised across ranks here, so every rank decides alike.
        """
        if grad_norm is None:
            grads = [p.grad.detach() for p in self._params_with_grad()]
            if not grads:
                return True
            grad_norm = torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(g, self.grad_clip_norm_type) for g in grads]),
                self.grad_clip_norm_type,
            )
        if bool(torch.isfinite(grad_norm)):
            return True
        losses = ", ".join(f"{k}={float(v):.4g}" for k, v in sums.items())
        self._on_nonfinite(
            f"Gradients became non-finite at iteration {self.iter} (total norm "
            f"{float(grad_norm)}) although the loss terms were finite ({losses})."
        )
        return False

    def _on_nonfinite(self, message: str) -> None:
        """Apply ``nan_policy``: raise, or drop this iteration's gradients and log the skip."""
        if self.nan_policy == "stop":
            raise FloatingPointError(
                f"{message} Training stopped; the last checkpoint written before this is intact."
            )
        logger.warning("%s Skipping this iteration's update.", message)
        self.optimizer.zero_grad(set_to_none=True)
        self.storage.put_scalar("skipped_nonfinite", 1.0, smoothing_hint=False)

    def _write_metrics(
        self, sums: dict[str, torch.Tensor], data_time: float, grad_norm: torch.Tensor | None
    ) -> None:
        means = {k: v / self.grad_accum_steps for k, v in sums.items()}
        means = comm.reduce_dict(means, average=True)
        scalars = {k: float(v.item()) for k, v in means.items()}
        self.storage.put_scalar("total_loss", sum(scalars.values()))
        self.storage.put_scalars(**scalars)
        self.storage.put_scalar("data_time", data_time)
        if grad_norm is not None:
            self.storage.put_scalar("grad_norm", grad_norm)
        if self.grad_scaler is not None:
            self.storage.put_scalar(
                "loss_scale", self.grad_scaler.get_scale(), smoothing_hint=False
            )
