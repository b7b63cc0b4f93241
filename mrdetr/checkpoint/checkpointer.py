"""Training checkpoints: atomic save, resume with full state, ``weights_only`` loading.

A checkpoint file is ``{"model", "optimizer", "scheduler", "grad_scaler", "ema", "iteration",
"rng", "metadata" (the training dataset's class names, when known), ...extra}``; every value is a tensor or plain Python data so ``torch.load(...,
weights_only=True)`` reads it. Writes go through :func:`mrdetr.utils.file_io.atomic_write` (a
temporary file in the same directory, fsynced, renamed over the final name, directory fsynced), so a
crash never leaves a half-written checkpoint behind; ``last_checkpoint`` (the basename of the newest
file) is replaced the same way afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any, Protocol

import torch
from torch import nn

from mrdetr.utils import comm
from mrdetr.utils.env import capture_rng_state, restore_rng_state
from mrdetr.utils.file_io import atomic_write, atomic_write_text

__all__ = ["METADATA_KEY", "CheckpointError", "Checkpointer", "check_key_match"]

logger = logging.getLogger(__name__)

LAST_CHECKPOINT_FILE = "last_checkpoint"
_EXTENSION = ".pth"
METADATA_KEY = "metadata"  # the entry of :attr:`Checkpointer.metadata`


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be read or does not fit the objects it is loaded into."""


class _Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> Any: ...


@contextlib.contextmanager
def _os_error_of_write(path: str) -> Iterator[None]:
    """Report a failed write (e.g. a full disk) as the ``OSError`` that caused it, naming ``path``.

    ``torch.save`` turns the ``OSError`` of a file write into a ``RuntimeError`` from its zip
    writer ("enforce fail at inline_container.cc"); the original error is its ``__context__``.
    """
    try:
        yield
    except RuntimeError as exc:
        cause = exc.__context__
        if not isinstance(cause, OSError) or cause.errno is None:
            raise
        raise OSError(cause.errno, f"cannot write checkpoint: {cause.strerror}", path) from exc
    except OSError as exc:
        if exc.errno is None or exc.filename is not None:
            raise
        raise OSError(exc.errno, f"cannot write checkpoint: {exc.strerror}", path) from exc


def resolve_weights(path: str) -> str:
    """A path, ``hf://<owner>/<repo>/<file>`` or model-zoo name as a local file (see
    :func:`mrdetr.model_zoo.resolve_checkpoint`).

    Raises:
        CheckpointError: the file is missing (the message says where to put it) or the address is
            malformed.
    """
    from mrdetr.model_zoo import resolve_checkpoint

    try:
        return resolve_checkpoint(path)
    except (FileNotFoundError, ValueError) as exc:
        raise CheckpointError(f"Checkpoint '{path}': {exc}") from None


def _unwrap(model: nn.Module) -> nn.Module:
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


class Checkpointer:
    """Save and restore a model together with its training state.

    Args:
        model: the model (a DDP wrapper is unwrapped; keys never carry ``module.``).
        save_dir: directory of the checkpoints and of ``last_checkpoint``.
        optimizer: saved as ``"optimizer"``.
        scheduler: LR scheduler, saved as ``"scheduler"``.
        grad_scaler: ``torch.amp.GradScaler``, saved as ``"grad_scaler"``.
        ema: :class:`mrdetr.engine.ema.ModelEMA`, saved as ``"ema"``.
        save_to_disk: whether :meth:`save` writes files; ``None`` means only on the main process.
        metadata: saved as :data:`METADATA_KEY` when not None (plain lists/dicts, e.g. the training
            dataset's class names); a plain attribute that may be set after construction.
        **checkpointables: further objects with ``state_dict``/``load_state_dict``.
    """

    def __init__(
        self,
        model: nn.Module,
        save_dir: str = "",
        *,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        grad_scaler: torch.amp.GradScaler | None = None,
        ema: _Stateful | None = None,
        save_to_disk: bool | None = None,
        metadata: dict[str, Any] | None = None,
        **checkpointables: _Stateful,
    ) -> None:
        self.model = _unwrap(model)
        self.metadata = metadata
        self.save_dir = save_dir
        self.save_to_disk = comm.is_main_process() if save_to_disk is None else save_to_disk
        named = {
            "optimizer": optimizer,
            "scheduler": scheduler,
            "grad_scaler": grad_scaler,
            "ema": ema,
        }
        self.checkpointables: dict[str, _Stateful] = {
            key: obj for key, obj in {**named, **checkpointables}.items() if obj is not None
        }

    # ------------------------------------------------------------------ saving
    def save(self, name: str, **extra: Any) -> str | None:
        """Write ``<save_dir>/<name>.pth`` atomically and point ``last_checkpoint`` at it.

        Args:
            name: file name without extension (e.g. ``"model_0004999"``).
            **extra: more plain entries, e.g. ``iteration=4999``.

        Returns:
            The written path, or ``None`` when this process does not save to disk.
        """
        if not self.save_dir or not self.save_to_disk:
            return None
        data: dict[str, Any] = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data["rng"] = capture_rng_state()
        if self.metadata is not None:
            data[METADATA_KEY] = self.metadata
        data.update(extra)
        os.makedirs(self.save_dir, exist_ok=True)
        basename = f"{name}{_EXTENSION}"
        path = os.path.join(self.save_dir, basename)
        logger.info("Saving checkpoint to %s", path)
        with _os_error_of_write(path):
            atomic_write(path, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)
        return path

    def tag_last_checkpoint(self, basename: str) -> None:
        """Atomically record ``basename`` as the newest checkpoint."""
        target = os.path.join(self.save_dir, LAST_CHECKPOINT_FILE)
        atomic_write_text(target, basename)

    # ------------------------------------------------------------------ queries
    def has_checkpoint(self) -> bool:
        """Whether ``last_checkpoint`` exists in ``save_dir``."""
        return bool(self.save_dir) and os.path.isfile(
            os.path.join(self.save_dir, LAST_CHECKPOINT_FILE)
        )

    def get_checkpoint_file(self) -> str | None:
        """Path of the file named in ``last_checkpoint`` (``None`` without one)."""
        if not self.has_checkpoint():
            return None
        with open(os.path.join(self.save_dir, LAST_CHECKPOINT_FILE)) as f:
            basename = f.read().strip()
        return os.path.join(self.save_dir, basename)

    # ------------------------------------------------------------------ loading
    def _read(self, path: str) -> dict[str, Any]:
        if not os.path.isfile(path):
            raise CheckpointError(f"Checkpoint file '{path}' does not exist.")
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # corrupt file, pickle with arbitrary objects, ...
            raise CheckpointError(
                f"Checkpoint file '{path}' cannot be read with torch.load(weights_only=True): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(data, dict) or "model" not in data:
            raise CheckpointError(
                f"Checkpoint file '{path}' is not a training checkpoint: expected a dict with a "
                f"'model' entry, got {type(data).__name__}"
                + (f" with keys {sorted(data)[:8]}" if isinstance(data, dict) else "")
                + "."
            )
        return data

    def load(self, path: str, *, checkpointables: list[str] | None = None) -> dict[str, Any]:
        """Restore the model and training state from one of our own checkpoints (strict).

        Args:
            path: checkpoint file.
            checkpointables: names of the state objects to restore (default: all registered).
                The RNG state is restored too (per rank when the file holds ``rng_per_rank``).

        Returns:
            The remaining entries of the file (``iteration`` and other extras).

        Raises:
            CheckpointError: unreadable file, missing entries or mismatched keys/shapes.
        """
        data = self._read(resolve_weights(path))
        logger.info("Loading checkpoint from %s", path)
        try:
            self.model.load_state_dict(data.pop("model"), strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"Checkpoint '{path}' does not match the model: {exc}") from exc
        names = list(self.checkpointables) if checkpointables is None else checkpointables
        for key in names:
            if key not in self.checkpointables:
                raise CheckpointError(
                    f"Cannot restore '{key}' from '{path}': no such object was given to the "
                    f"Checkpointer (registered: {sorted(self.checkpointables)})."
                )
            if key not in data:
                raise CheckpointError(
                    f"Checkpoint '{path}' has no '{key}' state (it holds {sorted(data)}); "
                    "resume needs a checkpoint written with the same components."
                )
            try:
                self.checkpointables[key].load_state_dict(data.pop(key))
            except (KeyError, ValueError, RuntimeError) as exc:
                raise CheckpointError(
                    f"Checkpoint '{path}': the '{key}' state does not fit: {exc}"
                ) from exc
        self._restore_rng(data, path)
        return data

    def _restore_rng(self, data: dict[str, Any], path: str) -> None:
        per_rank = data.pop("rng_per_rank", None)
        state = data.pop("rng", None)
        rank, world_size = comm.get_rank(), comm.get_world_size()
        if per_rank is not None and len(per_rank) == world_size:
            state = per_rank[rank]
        elif world_size > 1:
            logger.warning(
                "Checkpoint '%s' has no per-rank RNG states for %d processes; every rank "
                "restores the rank-0 state.",
                path,
                world_size,
            )
        if state is None:
            logger.warning(
                "Checkpoint '%s' holds no RNG state; RNG streams are not restored.", path
            )
            return
        try:
            restore_rng_state(state)
        except (ValueError, TypeError, RuntimeError) as exc:
            raise CheckpointError(f"Checkpoint '{path}': invalid RNG state: {exc}") from exc

    def load_weights(self, path: str, *, min_match: float = 0.0) -> None:
        """Load only model weights through :func:`mrdetr.checkpoint.load_official`.

        ``path`` is a file, ``hf://<owner>/<repo>/<file>`` or a model-zoo name.

        Accepts the official layout, ``{"model": state_dict}`` or a plain state dict (read with
        ``weights_only=True``); missing and unexpected keys are logged by ``load_official``.

        Args:
            path: the weights file.
            min_match: the smallest share (0..1) of the model's state-dict keys that the file
                must fill; below it the load is an error (0 accepts any file).

        Raises:
            CheckpointError: the file is missing or unreadable, shapes do not match, or it fills
                less than ``min_match`` of the model's keys.
        """
        try:
            from mrdetr.checkpoint import load_official
        except ImportError:  # package __init__ does not re-export it (yet)
            from mrdetr.checkpoint.official import load_official

        path = resolve_weights(path)
        logger.info("Loading model weights from %s", path)
        try:
            result = load_official(self.model, path)
        except (RuntimeError, ValueError) as exc:
            raise CheckpointError(f"Cannot load weights from '{path}': {exc}") from exc
        logger.info(
            "Loaded '%s': %d missing, %d unexpected keys.",
            path,
            len(getattr(result, "missing_keys", [])),
            len(getattr(result, "unexpected_keys", [])),
        )
        check_key_match(path, self.model, result.missing_keys, result.unexpected_keys, min_match)

    def resume_or_load(self, path: str, *, resume: bool = True, min_match: float = 0.0) -> int:
        """Resume from ``last_checkpoint`` if asked and present, else load weights from ``path``.

        Args:
            path: initial weights (``""`` to start from the model's own initialisation).
            resume: continue the run in ``save_dir`` when it has a ``last_checkpoint``.
            min_match: see :meth:`load_weights` (resuming is always strict).

        Returns:
            The iteration to start training from (saved iteration + 1 on resume, else 0).
        """
        if resume and self.has_checkpoint():
            checkpoint_file = self.get_checkpoint_file()
            extra = self.load(checkpoint_file)
            if "iteration" not in extra:
                raise CheckpointError(
                    f"Checkpoint '{checkpoint_file}' has no 'iteration'; cannot resume from it."
                )
            return int(extra["iteration"]) + 1
        if resume:
            logger.info("No checkpoint to resume in '%s'; starting a new run.", self.save_dir)
        if path:
            self.load_weights(path, min_match=min_match)
        return 0


def check_key_match(
    path: str,
    model: nn.Module,
    missing: list[str],
    unexpected: list[str],
    min_match: float,
) -> None:
    """Raise :class:`CheckpointError` when ``path`` filled less than ``min_match`` of the model.

    Args:
        path: the loaded file (for the message).
        model: the model it was loaded into.
        missing: model keys the file did not have.
        unexpected: file keys the model does not have.
        min_match: the smallest accepted share of filled model keys, 0..1.
    """
    total = len(model.state_dict())
    if total == 0:
        return
    share = (total - len(missing)) / total
    if share >= min_match:
        return
    raise CheckpointError(
        f"Initial checkpoint '{path}' fills {total - len(missing)} of the model's {total} keys "
        f"({share:.0%}, below train.init_checkpoint_min_match={min_match:g}); "
        f"{len(unexpected)} of its keys are not in the model (first: {unexpected[:3]}). Is it a "
        "checkpoint of this model? Set train.init_checkpoint_min_match=0 to load it anyway."
    )
