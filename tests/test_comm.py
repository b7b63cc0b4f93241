"""mrdetr.utils.comm without distributed and in a 2-process GLOO group."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

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
        }
        torch.save(result, os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
