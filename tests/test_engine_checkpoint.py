"""Checkpointer: round trip, kill-and-resume bit-identity, atomic saves, NaN runs, errors."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
from test_engine_common import ToyDetector, ToyLoader

from mrdetr.checkpoint.checkpointer import Checkpointer, CheckpointError
from mrdetr.engine import EMAHook, HookBase, LRScheduler, ModelEMA, PeriodicCheckpointer, Trainer
from mrdetr.solver import LRMultiplier, get_param_groups, step_decay_multiplier
from mrdetr.utils.env import set_deterministic

MAX_ITER, PERIOD, DECAY_AT = 6, 2, 3


@pytest.fixture
def deterministic():
    set_deterministic(True)
    yield
    set_deterministic(False)


class _NoisyLoader(ToyLoader):
    """Adds noise from Python's and NumPy's global RNGs, so their restore matters too."""

    def __iter__(self):
        for batch in super().__iter__():
            for item in batch:
                item["y"] = item["y"] + 0.01 * (random.random() + float(np.random.rand()))
            yield batch


class _Kill(HookBase):
    def __init__(self, at: int | None) -> None:
        self.at = at

    def before_step(self) -> None:
        if self.trainer.iter == self.at:
            raise RuntimeError(f"killed at {self.at}")


def _build(save_dir: str, init_seed: int):
    torch.manual_seed(init_seed)
    model = ToyDetector(dropout=0.3)
    optimizer = torch.optim.AdamW(get_param_groups(model, base_lr=1e-2, weight_decay=1e-4))
    scheduler = LRMultiplier(
        optimizer, step_decay_multiplier(max_iter=MAX_ITER, decay_iters=[DECAY_AT]), MAX_ITER
    )
    ema = ModelEMA(model, decay=0.9)
    checkpointer = Checkpointer(
        model, save_dir, optimizer=optimizer, scheduler=scheduler, ema=ema, save_to_disk=True
    )
    return model, optimizer, scheduler, ema, checkpointer


def _run(save_dir: str, *, init_seed: int, resume: bool, kill_at: int | None = None):
    model, optimizer, scheduler, ema, checkpointer = _build(save_dir, init_seed)
    start = checkpointer.resume_or_load("", resume=resume)
    if not resume:
        torch.manual_seed(1234)
        random.seed(1234)
        np.random.seed(1234)
    trainer = Trainer(
        model, _NoisyLoader(start_iter=start, seed=1), optimizer, grad_clip_max_norm=0.1
    )
    trainer.register_hooks(
        [
            EMAHook(ema),
            LRScheduler(scheduler),
            PeriodicCheckpointer(checkpointer, PERIOD),
            _Kill(kill_at),
        ]
    )
    trainer.train(start, MAX_ITER)
    return model, optimizer, ema, start


def test_kill_and_resume_is_bit_identical(tmp_path, deterministic) -> None:
    full_model, full_opt, full_ema, _ = _run(str(tmp_path / "full"), init_seed=0, resume=False)

    killed_dir = str(tmp_path / "killed")
    with pytest.raises(RuntimeError, match="killed at 5"):
        _run(killed_dir, init_seed=0, resume=False, kill_at=5)
    assert sorted(os.listdir(killed_dir)) == [
        "last_checkpoint",
        "model_0000001.pth",
        "model_0000003.pth",
    ]
    # a fresh process would start from other weights: resume must overwrite everything
    model, optimizer, ema, start = _run(killed_dir, init_seed=99, resume=True)
    assert start == 4  # iteration 4 ran before the kill but was not checkpointed: redone

    for (name, a), b in zip(full_model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name
    for name, a in full_ema.state.items():
        assert torch.equal(a, ema.state[name]), name
    for state_a, state_b in zip(full_opt.state.values(), optimizer.state.values()):
        assert all(torch.equal(state_a[k], state_b[k]) for k in ("exp_avg", "exp_avg_sq", "step"))
    assert [g["lr"] for g in full_opt.param_groups] == [g["lr"] for g in optimizer.param_groups]


def test_round_trip_restores_every_state(tmp_path) -> None:
    model, optimizer, scheduler, ema, checkpointer = _build(str(tmp_path), init_seed=0)
    trainer = Trainer(model, ToyLoader(), optimizer)
    trainer.register_hooks([EMAHook(ema), LRScheduler(scheduler)])
    trainer.train(0, 4)
    path = checkpointer.save("model_0000003", iteration=3, note="hello")
    raw = torch.load(path, weights_only=True)  # our files are weights_only-loadable
    assert {"model", "optimizer", "scheduler", "ema", "rng", "iteration", "note"} <= set(raw)
    expected_draws = (torch.rand(3), random.random(), np.random.rand())

    model2, optimizer2, scheduler2, ema2, checkpointer2 = _build(str(tmp_path), init_seed=5)
    torch.manual_seed(42)  # disturb the RNGs; load must restore them
    assert checkpointer2.resume_or_load("", resume=True) == 4
    assert torch.equal(torch.rand(3), expected_draws[0])
    assert random.random() == expected_draws[1] and np.random.rand() == expected_draws[2]
    for key, value in model.state_dict().items():
        assert torch.equal(value, model2.state_dict()[key])
    for key, value in ema.state.items():
        assert torch.equal(value, ema2.state[key])
    assert scheduler2.last_epoch == scheduler.last_epoch == 4
    assert scheduler2.get_last_lr() == pytest.approx(scheduler.get_last_lr())
    assert optimizer2.state_dict()["param_groups"] == optimizer.state_dict()["param_groups"]
    step = next(iter(optimizer.state.values()))["step"]
    assert torch.equal(next(iter(optimizer2.state.values()))["step"], step)


def test_interrupted_save_keeps_previous_checkpoint(tmp_path, monkeypatch) -> None:
    model = ToyDetector()
    checkpointer = Checkpointer(model, str(tmp_path), save_to_disk=True)
    good = checkpointer.save("model_0000001", iteration=1)
    real_save = torch.save

    def crashing_save(obj, f, *args, **kwargs):
        f.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crashing_save)
    with torch.no_grad():
        model.head.weight.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        checkpointer.save("model_0000002", iteration=2)
    monkeypatch.setattr(torch, "save", real_save)

    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]  # no .tmp
    assert checkpointer.get_checkpoint_file() == good
    fresh = ToyDetector()
    assert Checkpointer(fresh, str(tmp_path)).resume_or_load("", resume=True) == 2
    assert not torch.equal(fresh.head.weight, model.head.weight)  # the old weights came back


def test_nan_run_writes_no_checkpoint_for_bad_iteration(tmp_path) -> None:
    torch.manual_seed(0)
    model = ToyDetector()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    checkpointer = Checkpointer(model, str(tmp_path), optimizer=optimizer, save_to_disk=True)
    trainer = Trainer(model, ToyLoader(nan_at=2), optimizer)
    trainer.register_hooks([PeriodicCheckpointer(checkpointer, period=1, max_iter=3)])
    with pytest.raises(FloatingPointError, match="iteration 2"):
        trainer.train(0, 3)  # iteration 2 is also the last: model_final must not appear
    assert sorted(os.listdir(tmp_path)) == [
        "last_checkpoint",
        "model_0000000.pth",
        "model_0000001.pth",
    ]
    saved = torch.load(checkpointer.get_checkpoint_file(), weights_only=True)
    assert saved["iteration"] == 1
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())


def test_max_to_keep_never_removes_final(tmp_path) -> None:
    model = ToyDetector()
    checkpointer = Checkpointer(model, str(tmp_path), save_to_disk=True)
    trainer = Trainer(model, ToyLoader(), torch.optim.SGD(model.parameters(), lr=0.01))
    trainer.register_hooks([PeriodicCheckpointer(checkpointer, period=1, max_to_keep=2)])
    trainer.train(0, 5)
    assert sorted(os.listdir(tmp_path)) == [
        "last_checkpoint",
        "model_0000003.pth",
        "model_0000004.pth",
        "model_final.pth",
    ]
    assert checkpointer.get_checkpoint_file().endswith("model_final.pth")


def test_clear_errors_for_bad_files(tmp_path) -> None:
    model = ToyDetector()
    checkpointer = Checkpointer(
        model, str(tmp_path), optimizer=torch.optim.SGD(model.parameters(), lr=1)
    )
    corrupt = tmp_path / "model_0000009.pth"
    corrupt.write_bytes(b"not a checkpoint")
    checkpointer.tag_last_checkpoint(corrupt.name)
    with pytest.raises(CheckpointError, match="model_0000009.pth.*cannot be read"):
        checkpointer.resume_or_load("", resume=True)

    other = torch.nn.Linear(2, 2)
    path = Checkpointer(other, str(tmp_path / "other"), save_to_disk=True).save("x", iteration=0)
    with pytest.raises(CheckpointError, match="does not match the model"):
        checkpointer.load(path)
    pickled = tmp_path / "pickled.pth"
    torch.save({"model": {}, "obj": _NoisyLoader()}, pickled)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        checkpointer.load(str(pickled))
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpointer.resume_or_load(str(tmp_path / "missing.pth"), resume=False)


def test_load_weights_only_via_load_official(tmp_path) -> None:
    source = ToyDetector()
    path = Checkpointer(source, str(tmp_path), save_to_disk=True).save("model_final", iteration=9)
    target = ToyDetector()
    optimizer = torch.optim.SGD(target.parameters(), lr=0.5)
    checkpointer = Checkpointer(target, str(tmp_path / "new_run"), optimizer=optimizer)
    assert checkpointer.resume_or_load(path, resume=True) == 0  # nothing to resume: fresh start
    assert torch.equal(target.head.weight, source.head.weight)
    assert optimizer.param_groups[0]["lr"] == 0.5  # only weights were loaded


def test_grad_scaler_state_round_trip(tmp_path) -> None:
    model = ToyDetector()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    trainer = Trainer(
        model, ToyLoader(), optimizer, amp_enabled=True, amp_dtype="float16", grad_scaler=scaler
    )
    trainer.train(0, 1)
    assert scaler.state_dict()["_growth_tracker"] == 1  # one successful fp16 step
    path = Checkpointer(model, str(tmp_path), grad_scaler=scaler, save_to_disk=True).save(
        "m", iteration=0
    )
    restored = torch.amp.GradScaler("cpu", init_scale=1.0)
    Checkpointer(ToyDetector(), str(tmp_path), grad_scaler=restored).load(path)
    assert restored.get_scale() == scaler.get_scale() == 1024.0
    assert restored.state_dict() == scaler.state_dict()
