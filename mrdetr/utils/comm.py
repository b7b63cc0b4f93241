"""Helpers for multi-process (``torch.distributed``) runs.

Every function is safe to call when ``torch.distributed`` is unavailable or not initialised: it then
behaves as the single process of a world of size 1 (``all_gather(x) == [x]``, ``synchronize()`` does
nothing, ...).

Object collectives (:func:`all_gather`, :func:`gather`) pickle their argument and, when the default
process group uses NCCL, run over a cached GLOO group so that the pickled bytes stay in host memory.
"""

from __future__ import annotations

import os
import weakref
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "all_gather",
    "gather",
    "get_local_rank",
    "get_local_size",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "reduce_dict",
    "shared_random_seed",
    "synchronize",
]

# Seeds drawn by ``shared_random_seed`` lie in [0, _SEED_UPPER): the int32 range numpy accepts.
_SEED_UPPER = 2**31


def _is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    """Number of processes in the default group (1 without distributed)."""
    return dist.get_world_size() if _is_dist() else 1


def get_rank() -> int:
    """Global rank of this process (0 without distributed)."""
    return dist.get_rank() if _is_dist() else 0


def get_local_rank() -> int:
    """Rank of this process on its machine.

    Read from the ``LOCAL_RANK`` environment variable (set by ``torchrun`` and by
    ``mrdetr.engine.launch``); without it, the global rank is used (single-machine runs), and 0
    without distributed.
    """
    if not _is_dist():
        return 0
    env = os.environ.get("LOCAL_RANK")
    return int(env) if env is not None else get_rank()


def get_local_size() -> int:
    """Number of processes on this machine (``LOCAL_WORLD_SIZE``; else the world size)."""
    if not _is_dist():
        return 1
    env = os.environ.get("LOCAL_WORLD_SIZE")
    return int(env) if env is not None else get_world_size()


def is_main_process() -> bool:
    """True on global rank 0 (always true without distributed)."""
    return get_rank() == 0


def synchronize() -> None:
    """Barrier across all processes; a no-op without distributed or with one process."""
    if get_world_size() == 1:
        return
    if dist.get_backend() == dist.Backend.NCCL and torch.cuda.is_available():
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


# The GLOO side group made for object collectives under NCCL, held weakly together with the default
# group it was made for. A strong reference here would keep the group, and so its C++ worker threads,
# alive past ``dist.destroy_process_group()``: a worker that then drops the last reference to a
# finished collective's (Python-owned) tensors needs the GIL while the interpreter is finalising, and
# the process aborts ("terminate called without an active exception") after its work is done.
_gloo_group_ref: tuple[weakref.ref[dist.ProcessGroup], weakref.ref[dist.ProcessGroup]] | None = None


def _get_global_gloo_group() -> dist.ProcessGroup | None:
    """A GLOO group with all ranks (the default group itself when it is not NCCL).

    Under NCCL the group is created once per default group, collectively (every rank reaches it
    through the same collective call), and made again after the default group was destroyed and
    initialised anew.
    """
    global _gloo_group_ref
    if dist.get_backend() != dist.Backend.NCCL:
        return dist.group.WORLD
    if _gloo_group_ref is not None:
        made_for, group = (ref() for ref in _gloo_group_ref)
        if made_for is dist.group.WORLD and group is not None:
            return group
    group = dist.new_group(backend="gloo")
    _gloo_group_ref = (weakref.ref(dist.group.WORLD), weakref.ref(group))
    return group


def all_gather(obj: Any, group: dist.ProcessGroup | None = None) -> list[Any]:
    """Gather a picklable object from every process of ``group``.

    Args:
        obj: any picklable object.
        group: process group; default: all ranks (over GLOO when the default backend is NCCL).

    Returns:
        One object per rank of the group, in rank order (``[obj]`` without distributed).
    """
    if get_world_size() == 1:
        return [obj]
    if group is None:
        group = _get_global_gloo_group()
    size = dist.get_world_size(group)
    if size == 1:
        return [obj]
    output: list[Any] = [None] * size
    dist.all_gather_object(output, obj, group=group)
    return output


def gather(obj: Any, dst: int = 0, group: dist.ProcessGroup | None = None) -> list[Any]:
    """Gather a picklable object from every process on global rank ``dst``.

    Args:
        obj: any picklable object.
        dst: global rank that receives the list.
        group: process group; default: all ranks (over GLOO when the default backend is NCCL).

    Returns:
        On ``dst``: one object per rank, in rank order. On the other ranks: ``[]``.
    """
    if get_world_size() == 1:
        return [obj]
    if group is None:
        group = _get_global_gloo_group()
    size = dist.get_world_size(group)
    if size == 1:
        return [obj]
    if dist.get_rank() == dst:
        output: list[Any] | None = [None] * size
        dist.gather_object(obj, output, dst=dst, group=group)
        return output
    dist.gather_object(obj, None, dst=dst, group=group)
    return []


def reduce_dict(
    input_dict: dict[str, torch.Tensor], average: bool = True
) -> dict[str, torch.Tensor]:
    """Sum (or average) a dict of scalar tensors over all processes.

    Every rank receives the reduced values (all-reduce). Keys must be the same on every rank; the
    tensors must live on the device the backend works on (CUDA for NCCL).

    Args:
        input_dict: name -> scalar tensor.
        average: divide the sum by the world size.

    Returns:
        A new dict with the same keys and reduced values (the input itself without distributed).
    """
    world_size = get_world_size()
    if world_size == 1 or len(input_dict) == 0:
        return input_dict
    with torch.no_grad():
        names = sorted(input_dict)
        values = torch.stack([input_dict[k].detach().reshape(()) for k in names])
        dist.all_reduce(values)
        if average:
            values = values / world_size
        return dict(zip(names, values.unbind(0)))


def shared_random_seed() -> int:
    """A random integer, the same on every process (that of rank 0).

    All processes must call it (it is a collective when distributed).
    """
    seed = int(np.random.randint(_SEED_UPPER))
    return int(all_gather(seed)[0])
