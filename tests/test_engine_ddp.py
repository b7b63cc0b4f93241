"""``launch`` with 2 CPU (gloo) processes: DDP averages gradients like one process on the union;
a rank killed with SIGKILL takes the others down."""

from __future__ import annotations

import atexit
import os
import signal
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from process_threads import TASKS, gloo_workers
from test_engine_common import ToyDetector, ToyLoader, make_batch
from tiny_model import tiny_batch, tiny_model

from mrdetr.engine import Trainer, create_ddp_model, launch
from mrdetr.engine.launch import _launched_by_torchrun, resolve_find_unused_parameters
from mrdetr.utils import comm

WORLD, BATCH, ACCUM, ITERS, LR = 2, 4, 2, 2, 0.1
GRAD_BATCH_SEED = 3
KILL_TAKEDOWN_S = 30.0  # launch ends every process once one of them dies


class _ShardLoader:
    """This rank's slice of each ``ToyLoader`` batch (the union over ranks is the full batch)."""

    def __init__(self, rank: int, world: int) -> None:
        self.rank, self.world = rank, world

    def __iter__(self):
        per_rank = BATCH // self.world
        for batch in ToyLoader(batch_size=BATCH):
            yield batch[self.rank * per_rank : (self.rank + 1) * per_rank]


def _ddp_worker(out_dir: str) -> None:
    rank, world = comm.get_rank(), comm.get_world_size()
    torch.manual_seed(0)
    model = ToyDetector()
    ddp = create_ddp_model(model)
    assert isinstance(ddp, torch.nn.parallel.DistributedDataParallel)
    per_rank = BATCH // world
    shard = make_batch(0, batch_size=BATCH, seed=GRAD_BATCH_SEED)[
        rank * per_rank : (rank + 1) * per_rank
    ]
    sum(ddp(shard).values()).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}

    torch.manual_seed(0)
    model = ToyDetector()
    trainer = Trainer(
        create_ddp_model(model),
        _ShardLoader(rank, world),
        torch.optim.SGD(model.parameters(), lr=LR),
        grad_accum_steps=ACCUM,
    )
    trainer.train(0, ITERS)
    torch.save(
        {
            "grads": grads,
            "weights": model.state_dict(),
            "total_loss": [v for v, _ in trainer.storage.history("total_loss").values()],
            "local_rank": comm.get_local_rank(),
            "world": world,
        },
        os.path.join(out_dir, f"rank{rank}.pt"),
    )


@pytest.mark.skipif(_launched_by_torchrun(), reason="test spawns its own process group")
def test_two_process_gloo_matches_single_process(tmp_path) -> None:
    launch(_ddp_worker, WORLD, args=(str(tmp_path),), backend="gloo")
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    assert [r["local_rank"] for r in results] == [0, 1] and results[0]["world"] == WORLD

    torch.manual_seed(0)
    model = ToyDetector()
    sum(model(make_batch(0, batch_size=BATCH, seed=GRAD_BATCH_SEED)).values()).backward()
    for name, param in model.named_parameters():
        for result in results:  # every rank holds the average == the union's gradient
            torch.testing.assert_close(result["grads"][name], param.grad, rtol=1e-5, atol=1e-7)

    torch.manual_seed(0)
    model = ToyDetector()
    trainer = Trainer(
        model,
        ToyLoader(batch_size=BATCH),
        torch.optim.SGD(model.parameters(), lr=LR),
        grad_accum_steps=ACCUM,
    )
    trainer.train(0, ITERS)
    for name, value in model.state_dict().items():
        if value.is_floating_point():
            for result in results:
                torch.testing.assert_close(result["weights"][name], value, rtol=1e-5, atol=1e-7)
    single_losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert results[0]["total_loss"] == pytest.approx(single_losses, rel=1e-5)


def test_single_process_launch_runs_inline_and_ddp_is_noop() -> None:
    seen = []
    launch(seen.append, 1, args=("ran",))
    assert seen == ["ran"]
    model = ToyDetector()
    assert create_ddp_model(model) is model
    with pytest.raises(ValueError, match="num_gpus_per_machine"):
        launch(seen.append, 0)


def _record_group(seen: list) -> None:
    seen.append((dist.is_initialized(), comm.get_world_size(), comm.get_rank(), dist.get_backend()))


@pytest.mark.skipif(_launched_by_torchrun(), reason="test sets the torchrun variables itself")
def test_torchrun_environment_joins_without_spawning(monkeypatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for key, value in dict(
        LOCAL_RANK="0", RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    ).items():
        monkeypatch.setenv(key, value)
    seen: list = []
    launch(_record_group, 4, args=(seen,), backend="gloo")  # --num-gpus is ignored under torchrun
    assert seen == [(True, 1, 0, "gloo")]  # ran inline, in a group built from the environment
    assert not dist.is_initialized()  # and the group was torn down afterwards


class _Claims(torch.nn.Module):
    def __init__(self, trains_every_parameter: bool) -> None:
        super().__init__()
        self.trains_every_parameter = trains_every_parameter


@pytest.mark.parametrize(
    ("setting", "model", "expected"),
    [
        ("auto", _Claims(False), True),
        ("auto", _Claims(True), False),
        ("auto", ToyDetector(), False),  # a model that does not say: the official False
        (True, _Claims(True), True),
        (False, _Claims(False), False),
        ("True", _Claims(True), True),  # a command-line override of the string default
        ("false", _Claims(False), False),
    ],
)
def test_find_unused_parameters_setting(setting, model, expected) -> None:
    assert resolve_find_unused_parameters(model, setting) is expected


def test_find_unused_parameters_refuses_other_values() -> None:
    with pytest.raises(ValueError, match="expected true, false or \"auto\", got 'maybe'"):
        resolve_find_unused_parameters(ToyDetector(), "maybe")


def _primary_route_only(out_dir: str) -> None:
    """Two DDP steps of a tiny Mr. DETR trained on its primary route only: the auxiliary routes'
    parameters get no gradient, which DDP without find_unused_parameters refuses at step 2."""
    model = tiny_model(["model.train_routes=['primary']"])
    ddp = create_ddp_model(model)  # find_unused_parameters="auto"
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    model.train()
    for step in range(2):
        optimizer.zero_grad()
        sum(ddp(tiny_batch(num_boxes=(2, 1), seed=10 * step + comm.get_rank())).values()).backward()
        optimizer.step()
    torch.save(
        {n: p.grad for n, p in model.named_parameters() if p.requires_grad},
        os.path.join(out_dir, f"rank{comm.get_rank()}.pt"),
    )


@pytest.mark.skipif(_launched_by_torchrun(), reason="test spawns its own process group")
def test_two_processes_train_a_model_on_some_of_its_routes(tmp_path) -> None:
    launch(_primary_route_only, WORLD, args=(str(tmp_path),), backend="gloo")
    grads = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    unused = sorted(n for n, g in grads[0].items() if g is None)
    assert unused and all("instruct" in n or ".sep." in n for n in unused)
    for name, grad in grads[0].items():  # every rank holds the same averaged gradient
        if grad is not None:
            torch.testing.assert_close(grads[1][name], grad)
        else:
            assert grads[1][name] is None


def _record_gloo_workers_at_exit(path: str) -> None:
    with open(path, "w") as f:
        f.write(str(gloo_workers()))


def _group_held_in_a_cycle(out_dir: str) -> None:
    """Train a step with a DDP model kept only by a reference cycle (as a trainer and its hooks keep
    theirs) and record, at interpreter exit, how many GLOO worker threads are still alive."""
    holder = {"ddp": create_ddp_model(ToyDetector())}
    holder["self"] = holder
    sum(
        holder["ddp"](make_batch(0, batch_size=BATCH // WORLD, seed=GRAD_BATCH_SEED)).values()
    ).backward()
    comm.all_gather(comm.get_rank())
    exit_record = os.path.join(out_dir, f"rank{comm.get_rank()}_workers_at_exit.txt")
    atexit.register(_record_gloo_workers_at_exit, exit_record)


@pytest.mark.skipif(_launched_by_torchrun(), reason="test spawns its own process group")
@pytest.mark.skipif(not TASKS.is_dir(), reason="counts threads through Linux's /proc")
def test_launch_joins_the_groups_threads_before_the_process_exits(tmp_path) -> None:
    """A backend worker thread alive at interpreter exit can need the GIL to free a finished
    collective's tensors and abort the rank ("terminate called without an active exception")
    after its work is done; launch's teardown frees the groups, cycles included, before that."""
    launch(_group_held_in_a_cycle, WORLD, args=(str(tmp_path),), backend="gloo")
    for rank in range(WORLD):
        assert (tmp_path / f"rank{rank}_workers_at_exit.txt").read_text() == "0"


def _rank_one_dies(out_dir: str) -> None:
    flag = torch.ones(1)
    dist.all_reduce(flag)  # both ranks are up and joined
    if comm.get_rank() == 1:
        with open(os.path.join(out_dir, "killed_at"), "w") as f:
            f.write(repr(time.time()))
        os.kill(os.getpid(), signal.SIGKILL)
    while True:  # rank 0 waits on the dead rank (as in a training step) until it is taken down
        dist.all_reduce(flag)


@pytest.mark.skipif(_launched_by_torchrun(), reason="test spawns its own process group")
def test_a_killed_rank_takes_the_others_down(tmp_path) -> None:
    with pytest.raises(mp.ProcessExitedException, match="SIGKILL"):
        launch(_rank_one_dies, WORLD, args=(str(tmp_path),), backend="gloo")
    took = time.time() - float((tmp_path / "killed_at").read_text())
    print(f"\nthe other rank was taken down {took:.1f} s after rank 1 was killed")
    assert took < KILL_TAKEDOWN_S
