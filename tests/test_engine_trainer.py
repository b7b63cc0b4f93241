"""Trainer behaviour: AMP, clipping, accumulation, NaN policy, hooks, EMA."""

from __future__ import annotations

import pytest
import torch
from test_engine_common import ToyDetector, ToyLoader, make_batch

from mrdetr.engine import EMAHook, HookBase, LRScheduler, ModelEMA, Trainer
from mrdetr.solver import LRMultiplier, step_decay_multiplier


def _sgd(model: torch.nn.Module, lr: float = 0.1) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=lr)


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


class _Recorder(HookBase):
    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []

    def before_train(self) -> None:
        self.events.append(("before_train", self.trainer.iter))

    def before_step(self) -> None:
        self.events.append(("before_step", self.trainer.iter))

    def after_backward(self) -> None:
        self.events.append(("after_backward", self.trainer.iter))

    def after_step(self) -> None:
        self.events.append(("after_step", self.trainer.iter))

    def after_train(self) -> None:
        self.events.append(("after_train", self.trainer.iter))


def test_hook_order_and_logged_metrics() -> None:
    torch.manual_seed(0)
    model = ToyDetector()
    trainer = Trainer(model, ToyLoader(), _sgd(model))
    recorder = _Recorder()
    trainer.register_hooks([recorder, None])
    trainer.train(3, 5)
    assert recorder.events == [
        ("before_train", 3),
        ("before_step", 3),
        ("after_backward", 3),
        ("after_step", 3),
        ("before_step", 4),
        ("after_backward", 4),
        ("after_step", 4),
        ("after_train", 5),
    ]
    latest = trainer.storage.latest()
    assert {"total_loss", "loss_mse", "loss_l1", "lr", "data_time"} <= set(latest)
    assert latest["total_loss"][0] == pytest.approx(latest["loss_mse"][0] + latest["loss_l1"][0])
    assert latest["lr"] == (0.1, 4)


def test_bf16_autocast_step_on_cpu() -> None:
    torch.manual_seed(0)
    model = ToyDetector()
    before = _flat(model).clone()
    trainer = Trainer(model, ToyLoader(), _sgd(model), amp_enabled=True, amp_dtype="bfloat16")
    assert trainer.grad_scaler is None  # bf16 needs no loss scaling
    trainer.train(0, 1)
    assert model.seen_autocast == [(True, torch.bfloat16)]
    after = _flat(model)
    assert after.dtype == torch.float32 and torch.isfinite(after).all()
    assert not torch.equal(before, after)


def test_fp16_uses_grad_scaler_and_bad_dtype_raises() -> None:
    model = ToyDetector()
    trainer = Trainer(model, ToyLoader(), _sgd(model), amp_enabled=True, amp_dtype="float16")
    assert isinstance(trainer.grad_scaler, torch.amp.GradScaler)
    trainer.train(0, 1)
    assert model.seen_autocast[0] == (True, torch.float16)
    assert "loss_scale" in trainer.storage.latest()
    with pytest.raises(ValueError, match="amp_dtype"):
        Trainer(model, ToyLoader(), _sgd(model), amp_dtype="float8")


def test_grad_clipping_limits_the_update_norm() -> None:
    max_norm = 0.05
    torch.manual_seed(0)
    reference = ToyDetector()
    losses = reference(make_batch(0, batch_size=4, seed=0))
    sum(losses.values()).backward()
    raw_norm = torch.cat([p.grad.reshape(-1) for p in reference.parameters()]).norm()
    assert raw_norm > 10 * max_norm  # clipping must be active for this check

    for clip, expected in [(None, raw_norm), (max_norm, torch.tensor(max_norm))]:
        torch.manual_seed(0)
        model = ToyDetector()
        before = _flat(model).clone()
        trainer = Trainer(model, ToyLoader(), _sgd(model, lr=1.0), grad_clip_max_norm=clip)
        trainer.train(0, 1)
        step_norm = (_flat(model) - before).norm()  # SGD lr 1: update == -grad
        torch.testing.assert_close(step_norm, expected.to(step_norm.dtype), rtol=1e-4, atol=1e-6)
    assert trainer.storage.latest()["grad_norm"][0] == pytest.approx(raw_norm.item(), rel=1e-4)


class _ConcatLoader:
    """Big batches made of ``k`` consecutive micro-batches of ``ToyLoader``."""

    def __init__(self, k: int, batch_size: int) -> None:
        self.k, self.batch_size = k, batch_size

    def __iter__(self):
        micro = iter(ToyLoader(batch_size=self.batch_size))
        while True:
            yield [item for _ in range(self.k) for item in next(micro)]


def test_grad_accumulation_equals_big_batch_step() -> None:
    accum, micro_bs, iters = 2, 3, 3
    results = []
    for steps, loader in [
        (accum, ToyLoader(batch_size=micro_bs)),
        (1, _ConcatLoader(accum, micro_bs)),
    ]:
        torch.manual_seed(0)
        model = ToyDetector()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        scheduler = LRMultiplier(
            optimizer, step_decay_multiplier(max_iter=iters, decay_iters=[1]), iters
        )
        trainer = Trainer(model, loader, optimizer, grad_accum_steps=steps)
        trainer.register_hooks([LRScheduler(scheduler)])
        trainer.train(0, iters)
        results.append((model, scheduler, int(model.calls)))
    (acc_model, acc_sched, acc_calls), (big_model, big_sched, big_calls) = results
    torch.testing.assert_close(_flat(acc_model), _flat(big_model), rtol=1e-5, atol=1e-6)
    assert acc_calls == accum * iters and big_calls == iters  # k micro-batches per iteration
    assert acc_sched.last_epoch == big_sched.last_epoch == iters  # one LR step per iteration


def test_nan_loss_stops_with_iteration_and_terms() -> None:
    torch.manual_seed(0)
    model = ToyDetector()
    trainer = Trainer(model, ToyLoader(nan_at=2), _sgd(model))
    snapshot: dict[str, torch.Tensor] = {}

    class _Snapshot(HookBase):
        def after_step(self) -> None:
            snapshot["weights"] = _flat(self.trainer.model).clone()

    trainer.register_hooks([_Snapshot()])
    with pytest.raises(FloatingPointError, match=r"iteration 2.*loss_mse=nan.*loss_l1=nan"):
        trainer.train(0, 5)
    assert trainer.iter == 2
    assert torch.equal(_flat(model), snapshot["weights"])  # nothing updated by the bad step


class _NanGradDetector(ToyDetector):
    """Finite loss (sqrt(0) = 0) whose gradient is NaN (0 * 1/sqrt(0))."""

    def forward(self, batch):
        losses = super().forward(batch)
        return {**losses, "loss_sqrt": torch.sqrt(self.head.bias.sum() * 0.0)}


def test_nonfinite_gradients_of_finite_loss_stop_before_step() -> None:
    torch.manual_seed(0)
    model = _NanGradDetector()
    before = _flat(model).clone()
    trainer = Trainer(model, ToyLoader(), _sgd(model))
    with pytest.raises(
        FloatingPointError, match=r"Gradients became non-finite at iteration 0.*loss_sqrt=0"
    ):
        trainer.train(0, 2)
    assert torch.equal(_flat(model), before)


def test_nan_policy_skip_drops_the_update() -> None:
    torch.manual_seed(0)
    model = ToyDetector()
    trainer = Trainer(model, ToyLoader(nan_at=1, batch_size=2), _sgd(model), nan_policy="skip")
    weights: list[torch.Tensor] = []

    class _Snapshot(HookBase):
        def after_step(self) -> None:
            weights.append(_flat(self.trainer.model).clone())

    trainer.register_hooks([_Snapshot()])
    trainer.train(0, 3)
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[1], weights[2])
    assert trainer.storage.latest()["skipped_nonfinite"] == (1.0, 1)
    with pytest.raises(ValueError, match="nan_policy"):
        Trainer(model, ToyLoader(), _sgd(model), nan_policy="ignore")


def test_ema_update_math_and_apply() -> None:
    model = ToyDetector()
    ema = ModelEMA(model, decay=0.75)
    old = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model.calls.fill_(7)
    ema.update(model)
    for name, value in model.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(ema.state[name], 0.75 * old[name] + 0.25 * value)
        else:
            assert torch.equal(ema.state[name], value)  # integer buffers are copied
    current = _flat(model).clone()
    with ema.apply_to(model):
        torch.testing.assert_close(model.head.weight, ema.state["head.weight"])
    assert torch.equal(_flat(model), current)  # restored after the block


def test_ema_hook_follows_every_step() -> None:
    torch.manual_seed(0)
    model = ToyDetector()
    decay = 0.5
    ema = ModelEMA(model, decay=decay)
    expected = _flat(model).clone()

    class _Track(HookBase):
        def after_step(self) -> None:
            nonlocal expected
            expected = decay * expected + (1 - decay) * _flat(self.trainer.model)

    trainer = Trainer(model, ToyLoader(), _sgd(model))
    trainer.register_hooks([EMAHook(ema), _Track()])
    trainer.train(0, 3)
    ema_flat = torch.cat([ema.state[n].reshape(-1) for n, _ in model.named_parameters()])
    torch.testing.assert_close(ema_flat, expected)


def test_an_evaluation_reaches_metrics_json_before_the_next_log_period(tmp_path) -> None:
    """A process killed right after an evaluation must not lose its AP: the EvalHook flushes the
    writers at once instead of waiting for the writer's period."""
    import json

    from mrdetr.engine.hooks import EvalHook, PeriodicWriter
    from mrdetr.utils.events import JSONWriter

    torch.manual_seed(0)
    model = ToyDetector()
    trainer = Trainer(model, ToyLoader(), _sgd(model))
    metrics = tmp_path / "metrics.json"
    writer = PeriodicWriter([JSONWriter(metrics, window_size=1)], period=1000)
    seen: list[list[dict]] = []

    class _KilledAfterEval(HookBase):
        def after_step(self) -> None:  # what a crash right after the evaluation would leave
            if self.trainer.iter == 1:
                seen.append([json.loads(x) for x in metrics.read_text().splitlines()])

    evals = EvalHook(2, lambda: {"bbox": {"AP": 12.5}}, after_eval=writer.write_all)
    trainer.register_hooks([evals, _KilledAfterEval(), writer])
    trainer.train(0, 4)
    (records,) = seen
    assert [(r["iteration"], r["bbox/AP"]) for r in records if "bbox/AP" in r] == [(1, 12.5)]
