"""mrdetr.utils.comm without distributed and in a 2-process GLOO group."""

from __future__ import annotations

import os
import socket
import weakref

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from process_threads import TASKS, gloo_workers

from mrdetr.utils import comm


def test_single_process_fallbacks():
    assert not dist.is_initialized()
    assert comm.get_world_size() == 1
    assert comm.get_rank() == 0
    assert comm.get_local_rank() == 0
    assert comm.get_local_size() == 1
    assert comm.is_main_process()
    comm.synchronize()  # no-op, must not raise
    obj = {"a": [1, 2], "b": "x"}
    assert comm.all_gather(obj) == [obj]
    assert comm.gather(obj) == [obj]
    losses = {"loss": torch.tensor(2.0)}
    assert comm.reduce_dict(losses) is losses
    seed = comm.shared_random_seed()
    assert isinstance(seed, int) and 0 <= seed < 2**31


def _worker(rank: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        # objects of different sizes per rank
        gathered = comm.all_gather({"rank": rank, "data": list(range(rank + 3))})
        to_main = comm.gather(f"from-{rank}", dst=0)
        reduced = comm.reduce_dict({"b": torch.tensor(2.0 * rank), "a": torch.tensor(1.0 + rank)})
        summed = comm.reduce_dict({"a": torch.tensor(1.0 + rank)}, average=False)
        comm.synchronize()
        result = {
            "world": comm.get_world_size(),
            "rank": comm.get_rank(),
            "main": comm.is_main_process(),
            "gathered": gathered,
            "to_main": to_main,
            "reduced": {k: float(v) for k, v in reduced.items()},
            "summed": float(summed["a"]),
            "seed": comm.shared_random_seed(),
            "workers_running": gloo_workers(),
        }
    finally:
        dist.destroy_process_group()
    # Destroying must free the group and join its worker threads: one still alive at interpreter
    # exit can need the GIL to free a finished collective's tensors and abort the process.
    result["workers_after_destroy"] = gloo_workers()
    torch.save(result, os.path.join(out_dir, f"{rank}.pt"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not TASKS.is_dir(), reason="counts threads through Linux's /proc")
def test_two_process_gloo_collectives(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"{r}.pt", weights_only=False) for r in range(2))
    expected_gather = [{"rank": 0, "data": [0, 1, 2]}, {"rank": 1, "data": [0, 1, 2, 3]}]
    for rank, res in enumerate((r0, r1)):
        assert res["world"] == 2 and res["rank"] == rank and res["main"] == (rank == 0)
        assert res["gathered"] == expected_gather
        assert res["reduced"] == {"a": 1.5, "b": 1.0}  # means of (1, 2) and (0, 2)
        assert res["summed"] == 3.0
    assert r0["to_main"] == ["from-0", "from-1"]
    assert r1["to_main"] == []
    assert r0["seed"] == r1["seed"]
    for res in (r0, r1):
        assert res["workers_running"] > 0  # the count sees the group's threads
        assert res["workers_after_destroy"] == 0


def _init_one_process_group() -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1
    )


def test_nccl_side_group_is_made_once_per_default_group_and_freed_with_it(monkeypatch):
    """Under NCCL, object collectives run over a GLOO side group: made once per default group, not
    kept alive by comm once the default group is destroyed, and made anew after a re-init."""
    monkeypatch.setattr(dist, "get_backend", lambda group=None: dist.Backend.NCCL)
    _init_one_process_group()
    try:
        side = comm._get_global_gloo_group()
        assert side is not dist.group.WORLD
        assert comm._get_global_gloo_group() is side
        side_ref = weakref.ref(side)
        del side
    finally:
        dist.destroy_process_group()
    assert side_ref() is None  # freed with the default group: its worker threads are joined
    _init_one_process_group()
    try:
        again = comm._get_global_gloo_group()
        assert again is not None and again is not dist.group.WORLD
        assert comm._get_global_gloo_group() is again
    finally:
        dist.destroy_process_group()
