"""Stop on a signal: checkpoint at the running iteration, exact resume, Ctrl-C twice, CLI status."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_engine_common import ToyDetector, ToyLoader, toy_subprocess_env
from test_engine_runner import CONFIG_TEXT

from mrdetr.checkpoint.checkpointer import Checkpointer
from mrdetr.config import ConfigValueError, LazyConfig
from mrdetr.engine import HookBase, LRScheduler, PeriodicCheckpointer, Trainer
from mrdetr.engine.runner import do_train
from mrdetr.engine.stop_signal import StopOnSignal
from mrdetr.engine.train_loop import TrainingStopped
from mrdetr.solver import LRMultiplier, get_param_groups, step_decay_multiplier

REPO = Path(__file__).resolve().parents[1]
MAX_ITER, PERIOD = 8, 3  # periodic checkpoints after iterations 2 and 5


class _SendSignal(HookBase):
    """Sends ``signals`` to this process during iteration ``at`` (as a scheduler would)."""

    def __init__(self, at: int | None, signals: tuple[int, ...] = (signal.SIGTERM,)) -> None:
        self.at = at
        self.signals = signals

    def before_step(self) -> None:
        if self.trainer.iter == self.at:
            for signum in self.signals:
                os.kill(os.getpid(), signum)


def _run(
    save_dir: str,
    *,
    resume: bool,
    send_at: int | None = None,
    signals=(signal.SIGTERM,),
    chained=(),
):
    torch.manual_seed(0 if not resume else 99)  # a resume must overwrite every weight
    model = ToyDetector(dropout=0.3)
    optimizer = torch.optim.AdamW(get_param_groups(model, base_lr=1e-2, weight_decay=1e-4))
    scheduler = LRMultiplier(
        optimizer, step_decay_multiplier(max_iter=MAX_ITER, decay_iters=[4]), MAX_ITER
    )
    checkpointer = Checkpointer(model, save_dir, optimizer=optimizer, scheduler=scheduler)
    start = checkpointer.resume_or_load("", resume=resume)
    if not resume:
        torch.manual_seed(1234)
    trainer = Trainer(model, ToyLoader(start_iter=start, seed=1), optimizer)
    periodic = PeriodicCheckpointer(checkpointer, PERIOD)
    trainer.register_hooks(
        [
            LRScheduler(scheduler),
            periodic,
            StopOnSignal(periodic, chained=chained),
            _SendSignal(send_at, signals),
        ]
    )
    trainer.train(start, MAX_ITER)
    return model, optimizer, start


def test_sigterm_checkpoints_the_running_iteration_and_resume_is_exact(tmp_path) -> None:
    full_model, full_opt, _ = _run(str(tmp_path / "full"), resume=False)

    stopped = tmp_path / "stopped"
    with pytest.raises(TrainingStopped) as info:
        _run(str(stopped), resume=False, send_at=4)
    assert (info.value.iteration, info.value.signum, info.value.exit_code) == (4, 15, 143)
    assert info.value.checkpoint == str(stopped / "model_0000004.pth")
    assert sorted(os.listdir(stopped)) == [
        "last_checkpoint",
        "model_0000002.pth",
        "model_0000004.pth",
    ]
    assert (stopped / "last_checkpoint").read_text().strip() == "model_0000004.pth"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is given back

    model, optimizer, start = _run(str(stopped), resume=True)
    assert start == 5  # nothing that finished before the signal is redone
    for (name, a), b in zip(full_model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name
    for state_a, state_b in zip(full_opt.state.values(), optimizer.state.values()):
        assert all(torch.equal(state_a[k], state_b[k]) for k in ("exp_avg", "exp_avg_sq", "step"))


def test_a_signal_at_a_periodic_checkpoint_writes_it_once(tmp_path) -> None:
    with pytest.raises(TrainingStopped) as info:
        _run(str(tmp_path), resume=False, send_at=5)
    assert info.value.checkpoint.endswith("model_0000005.pth")
    assert sorted(os.listdir(tmp_path)) == [
        "last_checkpoint",
        "model_0000002.pth",
        "model_0000005.pth",
    ]


def test_a_signal_in_the_last_iteration_ends_the_run_normally(tmp_path) -> None:
    _run(str(tmp_path), resume=False, send_at=MAX_ITER - 1)  # no TrainingStopped
    assert torch.load(tmp_path / "model_final.pth", weights_only=True)["iteration"] == MAX_ITER - 1


def test_ctrl_c_twice_stops_at_once_without_a_checkpoint(tmp_path) -> None:
    with pytest.raises(KeyboardInterrupt):
        _run(str(tmp_path), resume=False, send_at=4, signals=(signal.SIGINT, signal.SIGINT))
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000002.pth"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_repeated_sigterm_still_writes_the_checkpoint(tmp_path) -> None:
    with pytest.raises(TrainingStopped) as info:
        _run(str(tmp_path), resume=False, send_at=1, signals=(signal.SIGTERM, signal.SIGTERM))
    assert info.value.iteration == 1 and (tmp_path / "model_0000001.pth").exists()


def test_a_handler_installed_by_a_launcher_is_left_to_it(tmp_path) -> None:
    received: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        _run(str(tmp_path), resume=False, send_at=4)  # trains to the end
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert received == [signal.SIGTERM]
    assert (tmp_path / "model_final.pth").exists() and not (tmp_path / "model_0000004.pth").exists()


class SignalAtBatch(ToyLoader):
    """The toy stream, sending SIGTERM to this process as it hands out batch ``at``."""

    def __init__(self, *, at: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.at = at

    def __iter__(self):
        for index, batch in enumerate(super().__iter__(), start=self.start_iter):
            if index == self.at:
                os.kill(os.getpid(), signal.SIGTERM)
            yield batch


def test_the_stopped_iteration_keeps_its_due_evaluation(tmp_path) -> None:
    config_file = tmp_path / "toy_config.py"
    config_file.write_text(
        CONFIG_TEXT
        + "from test_stop_signal import SignalAtBatch\n"
        + 'dataloader["train"] = L(SignalAtBatch)(batch_size=4, seed=0, at=3)\n'
    )
    cfg = LazyConfig.load(str(config_file))
    out = tmp_path / "run"
    cfg.train.output_dir = str(out)
    cfg.train.max_iter = 10
    cfg.train.eval_period = 2  # evaluations after iterations 1, 3, 5, ...
    cfg.train.checkpointer.period = 0
    args = type("Args", (), {"resume": False})()
    with pytest.raises(TrainingStopped) as info:
        do_train(cfg, args)
    assert info.value.iteration == 3
    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert [r["iteration"] for r in records if "toy/mse" in r] == [1, 3]
    assert [r["iteration"] for r in records if "total_loss" in r] == [0, 1, 2, 3]
    assert (out / "last_checkpoint").read_text().strip() == "model_0000003.pth"


def test_a_chained_signal_runs_its_own_handler_after_the_checkpoint(tmp_path) -> None:
    seen: list[tuple[int, bool]] = []  # (signal, stop checkpoint already written)

    def launcher_handler(signum, frame) -> None:  # e.g. submitit's: requeue the job
        seen.append((signum, (tmp_path / "model_0000004.pth").exists()))

    previous = signal.signal(signal.SIGUSR1, launcher_handler)
    try:
        with pytest.raises(TrainingStopped) as info:
            _run(
                str(tmp_path),
                resume=False,
                send_at=4,
                signals=(signal.SIGUSR1,),
                chained=("SIGUSR1",),
            )
        assert signal.getsignal(signal.SIGUSR1) is launcher_handler  # given back
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert seen == [(signal.SIGUSR1, True)] and info.value.iteration == 4


def test_bad_signal_name_is_a_config_error(tmp_path) -> None:
    config_file = tmp_path / "toy_config.py"
    config_file.write_text(CONFIG_TEXT)
    cfg = LazyConfig.load(str(config_file))
    cfg.train.output_dir = str(tmp_path / "run")
    cfg.train.stop_signals = ["SIGTERM", "SIGNOPE"]
    args = type("Args", (), {"resume": False})()
    with pytest.raises(ConfigValueError, match=r"train.stop_signals=.*'SIGNOPE' is not a signal"):
        do_train(cfg, args)


def _wait_for_iterations(metrics: Path, count: int, proc: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"train_net exited early: {proc.communicate()}")
        if metrics.exists() and len(metrics.read_text().splitlines()) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {count} iterations in {seconds} s")


def test_train_net_stops_on_sigterm_with_status_143_and_resumes(tmp_path) -> None:
    config_file = tmp_path / "toy_config.py"
    config_file.write_text(CONFIG_TEXT)
    out = tmp_path / "run"
    env = toy_subprocess_env()
    command = [
        sys.executable,
        str(REPO / "projects" / "train_net.py"),
        "--config-file",
        str(config_file),
        f"train.output_dir={out}",
        "train.eval_period=0",
        "train.checkpointer.period=0",
    ]
    proc = subprocess.Popen(
        [*command, "train.max_iter=1000000"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_iterations(out / "metrics.json", 3, proc, seconds=120)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    stopped = [line for line in stderr.splitlines() if line.startswith("stopped:")]
    assert len(stopped) == 1 and "Traceback" not in stderr, stderr[-3000:]
    name = (out / "last_checkpoint").read_text().strip()
    iteration = torch.load(out / name, weights_only=True)["iteration"]
    assert name == f"model_{iteration:07d}.pth" and f"after iteration {iteration};" in stopped[0]
    logged = [
        json.loads(line)["iteration"] for line in (out / "metrics.json").read_text().splitlines()
    ]
    assert logged[-1] == iteration  # every finished iteration is in the checkpoint

    resumed = subprocess.run(
        [*command[:4], "--resume", *command[4:], f"train.max_iter={iteration + 3}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Starting training from iteration {iteration + 1}" in (out / "log.txt").read_text()


@pytest.mark.slow  # ~25 s: three Python processes start
def test_two_process_run_stops_on_ctrl_c_to_the_launcher(tmp_path) -> None:
    config_file = tmp_path / "toy_config.py"
    config_file.write_text(CONFIG_TEXT)
    out = tmp_path / "ddp_run"
    env = toy_subprocess_env()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "projects" / "train_net.py"),
            "--config-file",
            str(config_file),
            "--num-gpus",
            "2",
            f"train.output_dir={out}",
            "train.max_iter=1000000",
            "train.eval_period=0",
            "train.checkpointer.period=0",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_iterations(out / "metrics.json", 3, proc, seconds=180)
    proc.send_signal(signal.SIGINT)  # to the launcher only: it passes the signal on, once
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 128 + signal.SIGINT, stderr[-3000:]
    stopped = [line for line in stderr.splitlines() if line.startswith("stopped:")]
    assert len(stopped) == 1 and "in every worker process" in stopped[0], stderr[-3000:]
    checkpoint = torch.load(out / (out / "last_checkpoint").read_text().strip(), weights_only=True)
    assert len(checkpoint["rng_per_rank"]) == 2
    logged = [
        json.loads(line)["iteration"] for line in (out / "metrics.json").read_text().splitlines()
    ]
    assert logged[-1] == checkpoint["iteration"]
    log = (out / "log.txt").read_text()
    assert f"Training stopped by SIGINT after iteration {checkpoint['iteration']}" in log
    assert "Traceback" not in log  # a stop is not an error, in the workers either
