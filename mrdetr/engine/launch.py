"""Start single- or multi-process (DDP) runs: spawn workers, or join a ``torchrun`` launch."""

from __future__ import annotations

import contextlib
import datetime
import gc
import inspect
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from mrdetr.engine.stop_signal import has_default_handler
from mrdetr.engine.train_loop import SIGNAL_EXIT_BASE, TrainingStopped
from mrdetr.utils import comm

__all__ = ["DEFAULT_TIMEOUT", "create_ddp_model", "launch", "resolve_find_unused_parameters"]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)
_TORCHRUN_ENV = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
_BACKENDS = ("auto", "nccl", "gloo")
_FORWARDED = (signal.SIGINT, signal.SIGTERM)  # the stop signals passed on to spawned workers
_WORKER_GRACE_S = 10.0  # then SIGTERM, and SIGKILL after as long again (torch's ProcessContext)


def _find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))  # the OS picks a free port
        return int(sock.getsockname()[1])


def _launched_by_torchrun() -> bool:
    return all(key in os.environ for key in _TORCHRUN_ENV)


def _pick_backend(backend: str) -> str:
    if backend not in _BACKENDS:
        raise ValueError(f"launch: backend={backend!r}; expected one of {_BACKENDS}.")
    if backend == "auto":
        return "nccl" if torch.cuda.is_available() else "gloo"
    return backend


def launch(
    main_func: Callable[..., Any],
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str = "auto",
    args: Sequence[Any] = (),
    *,
    backend: str = "auto",
    timeout: datetime.timedelta = DEFAULT_TIMEOUT,
) -> None:
    """Run ``main_func(*args)`` in one process or in ``num_gpus_per_machine`` DDP workers.

    * Under ``torchrun`` (``LOCAL_RANK``, ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``PORT`` set)
      nothing is spawned: this process joins the group from the environment
      (``--num-gpus``/``--num-machines`` are then ignored).
    * With a world size of 1 ``main_func`` runs directly, without a process group.
    * Otherwise ``num_gpus_per_machine`` processes are spawned on this machine. The backend is
      NCCL when CUDA is available, else GLOO, so ``num_gpus_per_machine=2`` on a CPU-only
      machine starts two CPU processes.

    ``main_func`` and ``args`` must be picklable (module-level function) for spawning.

    Args:
        main_func: the entry point.
        num_gpus_per_machine: processes per machine (one per GPU).
        num_machines: number of machines.
        machine_rank: rank of this machine.
        dist_url: rendezvous URL (``tcp://host:port``); ``"auto"`` picks a free localhost port
            (single machine only).
        args: positional arguments of ``main_func``.
        backend: ``"auto"``, ``"nccl"`` or ``"gloo"``.
        timeout: collective timeout.
    """
    backend = _pick_backend(backend)
    if _launched_by_torchrun():
        _run_from_env(main_func, args, backend, timeout)
        return
    if num_gpus_per_machine < 1 or num_machines < 1:
        raise ValueError(
            f"launch: num_gpus_per_machine={num_gpus_per_machine} and num_machines={num_machines} "
            "must both be >= 1."
        )
    if not 0 <= machine_rank < num_machines:
        raise ValueError(f"launch: machine_rank={machine_rank} must be in [0, {num_machines}).")
    world_size = num_machines * num_gpus_per_machine
    if world_size == 1:
        main_func(*args)
        return
    if dist_url == "auto":
        if num_machines != 1:
            raise ValueError(
                'launch: dist_url="auto" only works on one machine; pass tcp://HOST:PORT.'
            )
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    if backend == "nccl" and num_gpus_per_machine > torch.cuda.device_count():
        raise ValueError(
            f"launch: {num_gpus_per_machine} processes per machine requested but only "
            f"{torch.cuda.device_count()} CUDA devices are visible."
        )
    context = mp.start_processes(
        _distributed_worker,
        nprocs=num_gpus_per_machine,
        args=(
            main_func,
            world_size,
            num_gpus_per_machine,
            machine_rank,
            dist_url,
            tuple(args),
            backend,
            timeout,
        ),
        daemon=False,
        start_method="spawn",
        join=False,
    )
    _join_forwarding_stop_signals(context)


def _join_forwarding_stop_signals(context: mp.ProcessContext) -> None:
    """Wait for the spawned workers, passing SIGINT and SIGTERM on to them.

    The workers run in their own process group (:func:`_distributed_worker`), so a terminal's
    Ctrl-C reaches only this process and each worker gets every signal exactly once, from here.

    Raises:
        TrainingStopped: the workers stopped on such a signal after their stop checkpoint
            (:mod:`mrdetr.engine.stop_signal`), leaving with status 128 + its number.
    """

    def forward(signum: int, frame: Any) -> None:
        for process in context.processes:
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):  # it has just left
                    os.kill(process.pid, signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in _FORWARDED:  # (a signal this process ignores stays ignored, as in workers)
            if has_default_handler(signum):
                previous[signum] = signal.signal(signum, forward)
    try:
        # a worker that stopped or failed first gives the others time to leave by themselves
        while not context.join(grace_period=_WORKER_GRACE_S):
            pass
    except mp.ProcessExitedException as exc:
        signum = exc.exit_code - SIGNAL_EXIT_BASE
        if signum in _FORWARDED:
            raise TrainingStopped(signum) from None
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _destroy_process_group() -> None:
    """Destroy every process group and free it while the interpreter is still fully alive.

    Garbage collection first drops references that dead objects with reference cycles (a trainer and
    its DDP model) still hold to a group, so that destroying frees the group and joins its backend's
    worker threads here. A worker thread still alive at interpreter exit can need the GIL to free a
    finished collective's tensors, and that aborts the process after its work is done.
    """
    gc.collect()
    dist.destroy_process_group()


def _distributed_worker(
    local_rank: int,
    main_func: Callable[..., Any],
    world_size: int,
    num_gpus_per_machine: int,
    machine_rank: int,
    dist_url: str,
    args: tuple[Any, ...],
    backend: str,
    timeout: datetime.timedelta,
) -> None:
    if hasattr(os, "setpgrp"):
        os.setpgrp()  # a terminal's Ctrl-C reaches only the parent, which forwards it once
    global_rank = machine_rank * num_gpus_per_machine + local_rank
    # comm.get_local_rank/get_local_size read these, exactly as under torchrun
    os.environ.update(
        LOCAL_RANK=str(local_rank),
        RANK=str(global_rank),
        WORLD_SIZE=str(world_size),
        LOCAL_WORLD_SIZE=str(num_gpus_per_machine),
    )
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(
        backend=backend,
        init_method=dist_url,
        world_size=world_size,
        rank=global_rank,
        timeout=timeout,
    )
    try:
        comm.synchronize()
        main_func(*args)
    except TrainingStopped as stop:
        raise SystemExit(stop.exit_code) from None  # the parent turns it back into the stop
    finally:
        _destroy_process_group()


def _run_from_env(
    main_func: Callable[..., Any], args: Sequence[Any], backend: str, timeout: datetime.timedelta
) -> None:
    local_rank = int(os.environ["LOCAL_RANK"])
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    created = not dist.is_initialized()
    if created:
        dist.init_process_group(backend=backend, init_method="env://", timeout=timeout)
    logger.info(
        "Joined a torchrun launch: rank %d of %d (local rank %d, %s).",
        dist.get_rank(),
        dist.get_world_size(),
        local_rank,
        backend,
    )
    try:
        main_func(*args)
    finally:
        if created:
            _destroy_process_group()


def _buffer_sync_kwargs(sync: bool) -> dict[str, bool]:
    """``forward_sync_buffers`` where DDP has it (torch >= 2.13 deprecates ``broadcast_buffers``),
    else ``broadcast_buffers``. With the new flag every rank starts from rank 0's buffers, as it
    does from rank 0's parameters; ``False`` still stops the per-forward sync."""
    params = inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters
    key = "forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers"
    return {key: sync}


def create_ddp_model(
    model: nn.Module,
    *,
    broadcast_buffers: bool = False,
    find_unused_parameters: bool | str = "auto",
    **kwargs: Any,
) -> nn.Module:
    """Wrap ``model`` in ``DistributedDataParallel``; return it unchanged for one process.

    Args:
        model: the model, already on its device.
        broadcast_buffers: official Mr. DETR value ``False``.
        find_unused_parameters: ``"auto"``: ``True`` exactly when the model says that training
            leaves some parameters without a gradient (its ``trains_every_parameter`` is False,
            e.g. a Mr. DETR trained on only some of its routes), else ``False``, the official value
            (every route trained, every parameter gets a gradient).
        **kwargs: more ``DistributedDataParallel`` arguments.

    Raises:
        ValueError: ``find_unused_parameters`` is not a bool, ``"true"``, ``"false"`` or ``"auto"``.
    """
    find_unused = resolve_find_unused_parameters(model, find_unused_parameters)
    if comm.get_world_size() == 1:
        return model
    params = list(model.parameters())
    on_cuda = bool(params) and params[0].device.type == "cuda"
    device_ids = [params[0].device.index] if on_cuda else None
    return nn.parallel.DistributedDataParallel(
        model,
        device_ids=device_ids,
        **_buffer_sync_kwargs(broadcast_buffers),
        find_unused_parameters=find_unused,
        **kwargs,
    )


_FIND_UNUSED_WORDS = {"true": True, "false": False}


def resolve_find_unused_parameters(model: nn.Module, setting: bool | str) -> bool:
    """DDP's ``find_unused_parameters`` for ``model`` from a setting.

    Args:
        model: the model to wrap.
        setting: a bool, ``"true"``/``"false"`` (any case: a command-line override of the string
            default gives these) or ``"auto"`` (not ``model.trains_every_parameter``; False for a
            model without that attribute).

    Raises:
        ValueError: any other setting.
    """
    if isinstance(setting, bool):
        return setting
    word = str(setting).strip().lower()
    if word == "auto":
        return not getattr(model, "trains_every_parameter", True)
    if word in _FIND_UNUSED_WORDS:
        return _FIND_UNUSED_WORDS[word]
    raise ValueError(f'expected true, false or "auto", got {setting!r}')
